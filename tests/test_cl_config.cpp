// Experiment config: YAML loading, key=value overrides and every refusal.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <unistd.h>
#include <cctype>

#include <filesystem>
#include <fstream>

#include "clarena/cl/config.h"

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::ThrowsMessage;
using ::testing::Value;
using namespace clarena::cl;

namespace {

// The message of the ConfigError `f` throws.
template <typename F>
std::string config_error(F f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no ConfigError thrown";
  return "";
}

std::string override_error(const std::string& kv) {
  return config_error([&] {
    ExperimentConfig c;
    apply_override(c, kv);
  });
}

std::string validate_error(const std::vector<std::string>& kvs) {
  return config_error([&] {
    ExperimentConfig c;
    for (const auto& kv : kvs)
      apply_override(c, kv);
    validate(c);
  });
}

class YamlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("clarena_config_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path write(const std::string& text) {
    const fs::path p = dir_ / "cfg.yaml";
    std::ofstream(p) << text;
    return p;
  }
  fs::path dir_;
};

const fs::path kRepoConfigs = fs::path(__FILE__).parent_path().parent_path() / "configs";

}  // namespace

TEST(Config, DefaultsAreValid) {
  const ExperimentConfig c;
  EXPECT_NO_THROW(validate(c));
  const nlohmann::json j = to_json(c);
  EXPECT_EQ(j.size(), 27u);
  EXPECT_EQ(j["experiment_name"], "split_fmnist");
  EXPECT_EQ(j["hidden_dims"], nlohmann::json({256, 256}));
  EXPECT_EQ(j["class_order"], nlohmann::json::array());
  EXPECT_EQ(j["seed"], 42);
  EXPECT_EQ(j["lr"], 0.01);
  EXPECT_EQ(j["progress"], true);
  // Enums and the device by their config spellings.
  EXPECT_EQ(j["algorithm"], "finetuning");
  EXPECT_EQ(j["benchmark"], "split");
  EXPECT_EQ(j["dataset"], "fashion_mnist");
  EXPECT_EQ(j["scenario"], "til");
  EXPECT_EQ(j["optimizer"], "sgd");
  EXPECT_EQ(j["device"], "cpu");
  EXPECT_EQ(j["backbone"], "mlp");
  EXPECT_EQ(j["distillation_reg_factor"], 1.0);
  EXPECT_EQ(j["distillation_reg_temperature"], 2.0);
  EXPECT_EQ(j["parameter_change_reg_factor"], 1.0);
}

TEST(Config, EnumSpellings) {
  EXPECT_EQ(to_string(Algorithm::LwF), "lwf");
  EXPECT_EQ(to_string(Algorithm::EWC), "ewc");
  EXPECT_EQ(algorithm_name(Algorithm::LwF), "LwF");
  EXPECT_EQ(algorithm_name(Algorithm::Finetuning), "Finetuning");
  EXPECT_EQ(to_string(OptimizerKind::Adam), "adam");
  EXPECT_EQ(to_string(Benchmark::Permuted), "permuted");
  EXPECT_EQ(to_string(Scenario::CIL), "cil");
  EXPECT_EQ(to_string(Dataset::FashionMnist), "fashion_mnist");
  for (Algorithm a : enum_values<Algorithm>())
    EXPECT_EQ(enum_from_string<Algorithm>(to_string(a)), a);
  EXPECT_EQ(enum_values<Algorithm>().size(), 6u);
  EXPECT_EQ(enum_from_string<Algorithm>("LwF"), std::nullopt) << "config spellings only";
  EXPECT_EQ(enum_from_string<Dataset>("mnist"), Dataset::Mnist);
}

TEST(Config, BackboneKey) {
  EXPECT_EQ(ExperimentConfig{}.backbone, BackboneKind::MLP);
  EXPECT_EQ(to_string(BackboneKind::ResNet18), "resnet18");
  for (BackboneKind b : enum_values<BackboneKind>())
    EXPECT_EQ(enum_from_string<BackboneKind>(to_string(b)), b);
  EXPECT_EQ(enum_values<BackboneKind>().size(), 3u);
  ExperimentConfig c;
  apply_override(c, "backbone=cnn");
  EXPECT_EQ(c.backbone, BackboneKind::CNN);
  EXPECT_NO_THROW(validate(c));
  EXPECT_EQ(to_json(c)["backbone"], "cnn");
  EXPECT_THAT(override_error("backbone=vgg"),
              HasSubstr("config key `backbone`: unknown value `vgg`; valid choices: mlp, cnn, "
                        "resnet18"));
  c.backbone = static_cast<BackboneKind>(9);
  EXPECT_THAT([&] { validate(c); },
              ThrowsMessage<ConfigError>(HasSubstr("config key `backbone`: holds no valid value")));
  EXPECT_THAT(settings_help(), HasSubstr("mlp | cnn | resnet18"));
  // ResNet-18 per task for 1000 tasks is past the parameter cap: the message names the backbone.
  EXPECT_THAT(validate_error({"backbone=resnet18", "benchmark=permuted", "num_tasks=1000",
                              "algorithm=independent"}),
              HasSubstr("config key `backbone`: resnet18 with algorithm=independent"));
}

TEST(Config, ConfigErrorIsAValueError) {
  EXPECT_THROW(
      {
        ExperimentConfig c;
        apply_override(c, "epochs=x");
      },
      clarena::ValueError);
}

TEST(Config, OverridesSetValues) {
  ExperimentConfig c;
  apply_override(c, "epochs=5");
  apply_override(c, "hidden_dims=[256,128]");
  apply_override(c, "class_order=[ 1, 0, 3,2,5,4,7,6,9,8 ]");
  apply_override(c, "lr=1e-3");
  apply_override(c, "seed=18446744073709551615");
  apply_override(c, "device=cuda:1");
  apply_override(c, "optimizer=adam");
  apply_override(c, "scenario=cil");
  apply_override(c, "dataset=mnist");
  apply_override(c, "benchmark=permuted");
  apply_override(c, "freeze_heads=true");
  apply_override(c, "algorithm=fix");
  apply_override(c, "output_dir=/tmp/out=1");  // only the first '=' splits
  apply_override(c, "data_dir=/data/mnist");
  apply_override(c, "distillation_reg_factor=0");
  apply_override(c, "distillation_reg_temperature=0.5");
  apply_override(c, "parameter_change_reg_factor=5e3");
  EXPECT_EQ(c.epochs, 5);
  EXPECT_EQ(c.hidden_dims, (std::vector<int64_t>{256, 128}));
  EXPECT_EQ(c.class_order, (std::vector<int64_t>{1, 0, 3, 2, 5, 4, 7, 6, 9, 8}));
  EXPECT_DOUBLE_EQ(c.lr, 1e-3);
  EXPECT_EQ(c.seed, 18446744073709551615ULL);
  EXPECT_EQ(c.device, clarena::Device::cuda(1));
  EXPECT_EQ(c.optimizer, OptimizerKind::Adam);
  EXPECT_EQ(c.scenario, Scenario::CIL);
  EXPECT_EQ(c.dataset, Dataset::Mnist);
  EXPECT_EQ(c.benchmark, Benchmark::Permuted);
  EXPECT_TRUE(c.freeze_heads);
  EXPECT_EQ(c.algorithm, Algorithm::Fix);
  EXPECT_EQ(c.output_dir, "/tmp/out=1");
  EXPECT_EQ(c.data_dir, "/data/mnist");
  EXPECT_EQ(c.distillation_reg_factor, 0.0);
  EXPECT_EQ(c.distillation_reg_temperature, 0.5);
  EXPECT_EQ(c.parameter_change_reg_factor, 5000.0);
  apply_override(c, "class_order=[]");
  EXPECT_TRUE(c.class_order.empty());
  EXPECT_NO_THROW(validate(c));
  apply_override(c, "data_dir=");
  EXPECT_EQ(c.data_dir, "");
  apply_override(c, "device=cuda");
  EXPECT_EQ(c.device, clarena::Device::cuda(0));
  apply_override(c, "algorithm=lwf");
  EXPECT_EQ(c.algorithm, Algorithm::LwF);
  apply_override(c, "algorithm=ewc");
  EXPECT_EQ(c.algorithm, Algorithm::EWC);
  // A value is YAML: quoted, it may hold what plain YAML would read as a mapping or comment.
  apply_override(c, "output_dir=\"a: b #c\"");
  EXPECT_EQ(c.output_dir, "a: b #c");
  apply_override(c, "hidden_dims=[0x10, +8]");
  EXPECT_EQ(c.hidden_dims, (std::vector<int64_t>{16, 8}));
}

TEST(Config, NewAlgorithmKeysValidated) {
  EXPECT_THAT(override_error("distillation_reg_factor=-1"),
              HasSubstr("config key `distillation_reg_factor`: expected a finite number >= 0.0, "
                        "got -1.0"));
  EXPECT_THAT(override_error("distillation_reg_factor=x"),
              HasSubstr("expected a finite number >= 0.0, got `x`"));
  EXPECT_THAT(override_error("distillation_reg_temperature=0"),
              HasSubstr("config key `distillation_reg_temperature`: expected a finite number > "
                        "0.0, got 0.0"));
  EXPECT_THAT(override_error("distillation_reg_temperature=.inf"),
              HasSubstr("config key `distillation_reg_temperature`"));
  EXPECT_THAT(override_error("parameter_change_reg_factor=-0.5"),
              HasSubstr("config key `parameter_change_reg_factor`: expected a finite number >= "
                        "0.0, got -0.5"));
  EXPECT_THAT(override_error("parameter_change_reg_factor=[1]"),
              HasSubstr("config key `parameter_change_reg_factor`"));
  ExperimentConfig c;
  c.distillation_reg_temperature = -1;
  EXPECT_THAT([&] { validate(c); },
              ThrowsMessage<ConfigError>(HasSubstr("config key `distillation_reg_temperature`")));
}

TEST(Config, AlgorithmLists) {
  EXPECT_EQ(parse_algorithm_list("algorithms", "[finetuning,fix,lwf,ewc]"),
            (std::vector<Algorithm>{Algorithm::Finetuning, Algorithm::Fix, Algorithm::LwF,
                                    Algorithm::EWC}));
  EXPECT_EQ(parse_algorithm_list("algorithms", "[ independent ]"),
            (std::vector<Algorithm>{Algorithm::Independent}));
  auto refused = [](const std::string& text) {
    return config_error([&] { parse_algorithm_list("algorithms", text); });
  };
  EXPECT_THAT(refused("[finetuning,si]"),
              HasSubstr("`algorithms`: unknown algorithm `si`; expected a non-empty list of "
                        "algorithms, like [finetuning,fix,lwf,ewc]; valid: finetuning, fix, "
                        "independent, random, lwf, ewc"));
  EXPECT_THAT(refused("[]"), HasSubstr("expected a non-empty list"));
  EXPECT_THAT(refused("fix"), HasSubstr("got `fix`"));
  EXPECT_THAT(refused("[fix,fix]"), HasSubstr("`fix` is listed twice"));
  EXPECT_THAT(refused("[fix"), HasSubstr("is not a YAML value"));
  EXPECT_THAT(refused("[[fix]]"), HasSubstr("unknown algorithm `[fix]`"));
  EXPECT_THAT(refused(std::string(100, '[')), HasSubstr("nested deeper than 32 levels"));
}

TEST(Config, UnknownKeyListsValidKeys) {
  const std::string msg = override_error("algo=fix");
  EXPECT_THAT(msg, HasSubstr("unknown config key `algo`"));
  EXPECT_THAT(msg, HasSubstr("valid keys: experiment_name, benchmark, dataset, data_dir"));
  EXPECT_THAT(msg, HasSubstr("max_train_samples_per_task, progress"));
}

TEST(Config, OverrideWithoutEquals) {
  EXPECT_THAT(override_error("epochs"), HasSubstr("not of the form key=value"));
}

TEST(Config, UnknownChoicesListValidOnes) {
  EXPECT_THAT(override_error("algorithm=si"),
              HasSubstr("config key `algorithm`: unknown value `si`; valid choices: finetuning, "
                        "fix, independent, random, lwf, ewc"));
  EXPECT_THAT(override_error("algorithm=LwF"), HasSubstr("unknown value `LwF`"));
  EXPECT_THAT(override_error("algorithm=[fix]"), HasSubstr("unknown value `[fix]`"));
  EXPECT_THAT(override_error("benchmark=rotated"), HasSubstr("valid choices: split, permuted"));
  EXPECT_THAT(override_error("dataset=cifar10"), HasSubstr("valid choices: fashion_mnist, mnist"));
  EXPECT_THAT(override_error("scenario=dil"), HasSubstr("valid choices: til, cil"));
  EXPECT_THAT(override_error("optimizer=rmsprop"), HasSubstr("valid choices: sgd, adam"));
}

TEST(Config, BadNumbersNameTypeAndRange) {
  EXPECT_THAT(override_error("epochs=two"),
              HasSubstr("config key `epochs`: expected an integer in [1, 100000], got `two`"));
  EXPECT_THAT(override_error("epochs=0"), HasSubstr("expected an integer in [1, 100000], got 0"));
  EXPECT_THAT(override_error("epochs=2.5"), HasSubstr("got `2.5`"));
  EXPECT_THAT(override_error("batch_size=-4"), HasSubstr("config key `batch_size`"));
  EXPECT_THAT(override_error("seed=-1"), HasSubstr("config key `seed`"));
  EXPECT_THAT(override_error("lr=abc"), HasSubstr("expected a number in (0.0, 10.0], got `abc`"));
  EXPECT_THAT(override_error("lr=0"), HasSubstr("expected a number in (0.0, 10.0], got 0.0"));
  EXPECT_THAT(override_error("lr=nan"), HasSubstr("config key `lr`"));
  EXPECT_THAT(override_error("momentum=1"), HasSubstr("expected a number in [0.0, 1.0)"));
  EXPECT_THAT(override_error("val_fraction=1.5"), HasSubstr("config key `val_fraction`"));
  EXPECT_THAT(override_error("weight_decay=-0.1"), HasSubstr("config key `weight_decay`"));
  EXPECT_THAT(override_error("max_train_samples_per_task=-1"),
              HasSubstr("config key `max_train_samples_per_task`"));
  EXPECT_THAT(override_error("num_tasks=0"), HasSubstr("config key `num_tasks`"));
}

TEST(Config, BadListsAndBools) {
  EXPECT_THAT(override_error("hidden_dims=256"),
              HasSubstr("config key `hidden_dims`: expected a non-empty list of integers"));
  EXPECT_THAT(override_error("hidden_dims=[256,x]"), HasSubstr("element `x` of `[256,x]`"));
  EXPECT_THAT(override_error("hidden_dims=[256,,128]"), HasSubstr("element `` of"));
  EXPECT_THAT(override_error("hidden_dims=[256,128"), HasSubstr("like [256,128]"));
  EXPECT_THAT(override_error("hidden_dims=[]"), HasSubstr("non-empty list"));
  EXPECT_THAT(override_error("hidden_dims=[0]"), HasSubstr("element 0 out of range"));
  EXPECT_THAT(override_error("class_order=[10]"), HasSubstr("config key `class_order`"));
  EXPECT_THAT(
      override_error("freeze_heads=maybe"),
      HasSubstr("config key `freeze_heads`: expected a boolean (true or false), got `maybe`"));
}

TEST(Config, BadDeviceAndName) {
  for (const char* d : {"gpu", "cuda:", "cuda:x", "cuda:-1", "CPU", "cuda:0:1"}) {
    EXPECT_THAT(override_error(std::string("device=") + d), HasSubstr("valid: cpu, cuda, cuda:N"))
        << d;
  }
  EXPECT_THAT(override_error("experiment_name=a b"), HasSubstr("config key `experiment_name`"));
  EXPECT_THAT(override_error("experiment_name="), HasSubstr("config key `experiment_name`"));
}

TEST(Config, CrossKeyRules) {
  EXPECT_THAT(validate_error({"dataset=mnist"}), HasSubstr("config key `data_dir`"));
  EXPECT_NO_THROW({
    ExperimentConfig c;
    apply_override(c, "dataset=mnist");
    apply_override(c, "data_dir=/data/mnist");
    validate(c);
  });
  EXPECT_THAT(validate_error({"num_tasks=3"}), HasSubstr("valid num_tasks: 1, 2, 5, 10"));
  EXPECT_THAT(validate_error({"class_order=[0,1,2,3,4,5,6,7,8,8]"}), HasSubstr("appears twice"));
  EXPECT_THAT(validate_error({"class_order=[0,1,2]"}), HasSubstr("class_order"));
  EXPECT_THAT(validate_error({"benchmark=permuted", "class_order=[0,1,2,3,4,5,6,7,8,9]"}),
              HasSubstr("applies only to benchmark=split"));
  EXPECT_NO_THROW({
    ExperimentConfig c;
    apply_override(c, "benchmark=permuted");
    apply_override(c, "num_tasks=10");
    validate(c);
  });
}

TEST(Config, ValidateChecksFieldsSetInCode) {
  ExperimentConfig c;
  c.algorithm = static_cast<Algorithm>(42);
  EXPECT_THAT([&] { validate(c); }, ThrowsMessage<ConfigError>(
                                        HasSubstr("config key `algorithm`: holds no valid value")));
  c = ExperimentConfig{};
  c.device = clarena::Device::cuda(1000);
  EXPECT_THAT([&] { validate(c); }, ThrowsMessage<ConfigError>(HasSubstr("config key `device`")));
  c = ExperimentConfig{};
  c.hidden_dims.clear();
  EXPECT_THROW(validate(c), ConfigError);
}

TEST_F(YamlTest, LoadsValues) {
  const ExperimentConfig c =
      load_config(write("experiment_name: my_run\n"
                        "benchmark: permuted\n"
                        "num_tasks: 3\n"
                        "scenario: cil\n"
                        "algorithm: fix\n"
                        "hidden_dims: [128, 64]\n"
                        "batch_norm: true\n"
                        "lr: 1.0e-3\n"
                        "seed: 7\n"
                        "device: \"cuda:0\"\n"
                        "data_dir:\n"));
  EXPECT_EQ(c.experiment_name, "my_run");
  EXPECT_EQ(c.benchmark, Benchmark::Permuted);
  EXPECT_EQ(c.num_tasks, 3);
  EXPECT_EQ(c.scenario, Scenario::CIL);
  EXPECT_EQ(c.algorithm, Algorithm::Fix);
  EXPECT_EQ(c.hidden_dims, (std::vector<int64_t>{128, 64}));
  EXPECT_TRUE(c.batch_norm);
  EXPECT_DOUBLE_EQ(c.lr, 1e-3);
  EXPECT_EQ(c.seed, 7u);
  EXPECT_EQ(c.device, clarena::Device::cuda(0));
  EXPECT_EQ(c.epochs, 2);  // untouched default
}

TEST_F(YamlTest, BlockListAndEmptyFile) {
  const ExperimentConfig c = load_config(write("hidden_dims:\n  - 32\n  - 16\n"));
  EXPECT_EQ(c.hidden_dims, (std::vector<int64_t>{32, 16}));
  EXPECT_EQ(to_json(load_config(write(""))), to_json(ExperimentConfig{}));
}

TEST_F(YamlTest, UnknownKeyNamesFileLineAndValidKeys) {
  const fs::path p = write("epochs: 3\nalgo: fix\n");
  const std::string msg = config_error([&] { load_config(p); });
  EXPECT_THAT(msg, HasSubstr(p.string()));
  EXPECT_THAT(msg, HasSubstr("line 2"));
  EXPECT_THAT(msg, HasSubstr("unknown config key `algo`; valid keys: experiment_name"));
}

TEST_F(YamlTest, BadValueNamesFileAndKey) {
  const fs::path p = write("epochs: 1\nalgorithm: [lwf]\n");
  const std::string msg = config_error([&] { load_config(p); });
  EXPECT_THAT(msg, HasSubstr(p.string() + "', line 2"));
  EXPECT_THAT(msg, HasSubstr("unknown value `[lwf]`"));
  EXPECT_THAT(msg, HasSubstr("valid choices: finetuning, fix, independent, random, lwf, ewc"));
  EXPECT_THAT(config_error([&] { load_config(write("epochs: 2.5\n")); }),
              HasSubstr("config key `epochs`: expected an integer in [1, 100000], got `2.5`"));
  EXPECT_THAT(config_error([&] { load_config(write("hidden_dims: [8, x]\n")); }),
              HasSubstr("element `x` of `[8,x]` is not an integer"));
}

TEST_F(YamlTest, CrossKeyErrorNamesFile) {
  const fs::path p = write("dataset: mnist\n");
  const std::string msg = config_error([&] { load_config(p); });
  EXPECT_THAT(msg, HasSubstr(p.string()));
  EXPECT_THAT(msg, HasSubstr("config key `data_dir`"));
}

TEST_F(YamlTest, StructuralErrors) {
  EXPECT_THAT(config_error([&] { load_config(write("epochs: [1\n")); }),
              HasSubstr("YAML error at line"));
  EXPECT_THAT(config_error([&] { load_config(write("- a\n- b\n")); }), HasSubstr("mapping"));
  EXPECT_THAT(config_error([&] { load_config(write("epochs:\n  a: 1\n")); }),
              HasSubstr("got a mapping"));
  EXPECT_THAT(config_error([&] { load_config(write("epochs: 1\nepochs: 2\n")); }),
              HasSubstr("given twice"));
  EXPECT_THAT(config_error([&] { load_config(write("hidden_dims: [[1], 2]\n")); }),
              HasSubstr("plain values"));
}

TEST_F(YamlTest, MissingFileIsIOError) {
  EXPECT_THAT([&] { load_config(dir_ / "absent.yaml"); },
              ThrowsMessage<clarena::IOError>(HasSubstr("absent.yaml' does not exist")));
}

TEST(Config, RepoConfigsLoad) {
  if (!fs::exists(kRepoConfigs / "split_fmnist.yaml")) GTEST_SKIP() << "configs/ not found";
  EXPECT_EQ(to_json(load_config(kRepoConfigs / "split_fmnist.yaml")), to_json(ExperimentConfig{}));
  const ExperimentConfig p = load_config(kRepoConfigs / "permuted_fmnist.yaml");
  EXPECT_EQ(p.benchmark, Benchmark::Permuted);
  EXPECT_EQ(p.experiment_name, "permuted_fmnist");
}

TEST(Config, SettingsHelpListsEverything) {
  const std::string h = settings_help();
  const nlohmann::json all = to_json(ExperimentConfig{});
  for (const auto& [key, value] : all.items())
    EXPECT_THAT(h, HasSubstr(key));
  EXPECT_THAT(h, HasSubstr("finetuning | fix | independent | random | lwf | ewc"));
  EXPECT_THAT(h, HasSubstr("finite number > 0.0"));
  EXPECT_THAT(h, HasSubstr("[256,256]"));
  EXPECT_THAT(h, HasSubstr("cpu | cuda | cuda:N"));
}

TEST(Config, ResolvedDirs) {
  ExperimentConfig c;
  EXPECT_EQ(resolved_data_dir(c), fs::path("/usr/share/datasets/fashion-mnist"));
  const std::string out = resolved_output_dir(c, 0).string();
  // outputs/split_fmnist_YYYYmmdd-HHMMSS (std::regex draws GCC 12 false warnings).
  const std::string prefix = "outputs/split_fmnist_";
  ASSERT_EQ(out.size(), prefix.size() + 15) << out;
  EXPECT_EQ(out.substr(0, prefix.size()), prefix);
  for (size_t i = prefix.size(); i < out.size(); ++i)
    EXPECT_TRUE(i == prefix.size() + 8 ? out[i] == '-' : std::isdigit(out[i]) != 0) << out;
  c.output_dir = "/tmp/x";
  c.data_dir = "/data";
  EXPECT_EQ(resolved_output_dir(c, 0), fs::path("/tmp/x"));
  EXPECT_EQ(resolved_data_dir(c), fs::path("/data"));
}

// ---- Refusals of hostile or malformed input (issue 8) ----

TEST(Config, StringsMustBeUtf8) {
  for (const std::string key :
       {"output_dir", "data_dir", "experiment_name", "device", "benchmark"}) {
    for (const std::string bad :
         {"o\xff", "\xc0\xaf", "a\xed\xa0\x80", "x\xe2\x82", "\xf4\x90\x80\x80"}) {
      SCOPED_TRACE(key + " " + bad);
      const std::string msg = override_error(key + "=" + bad);
      EXPECT_THAT(msg, HasSubstr("config key `" + key + "`"));
      EXPECT_THAT(msg, HasSubstr("is not valid UTF-8"));
      EXPECT_EQ(msg.find('\xff'), std::string::npos) << "the message shows bad bytes escaped";
    }
  }
  EXPECT_THAT(override_error("output_dir=o\xff"), HasSubstr("(byte 0xff at offset 1)"));
  EXPECT_THAT(override_error("output_dir=o\xff"), HasSubstr("`o\\xff`"));
  // Well-formed UTF-8 passes; set in code, the same check runs in validate().
  ExperimentConfig c;
  apply_override(c, "output_dir=/tmp/r\xc3\xa9sum\xc3\xa9_\xe6\x97\xa5\xf0\x9f\x98\x80");
  EXPECT_EQ(c.output_dir, "/tmp/r\xc3\xa9sum\xc3\xa9_\xe6\x97\xa5\xf0\x9f\x98\x80");
  EXPECT_NO_THROW(validate(c));
  c.output_dir = "out\xff";
  EXPECT_THAT(config_error([&] { validate(c); }), HasSubstr("config key `output_dir`"));
  EXPECT_NO_THROW(to_json(ExperimentConfig{}).dump());
}

TEST(Config, StringsRefuseControlCharacters) {
  EXPECT_THAT(override_error(std::string("output_dir=a\x01") + "b"),
              HasSubstr("control character"));
  ExperimentConfig c;
  c.data_dir = std::string("a\0b", 3);  // a NUL would cut the path short
  EXPECT_THAT(config_error([&] { validate(c); }), HasSubstr("config key `data_dir`"));
}

TEST(Config, HugeValuesRefused) {
  EXPECT_THAT(override_error("epochs=1e20"), HasSubstr("config key `epochs`"));
  EXPECT_THAT(override_error("epochs=100000000000000000000"), HasSubstr("config key `epochs`"));
  EXPECT_THAT(override_error("batch_size=99999999999"), HasSubstr("config key `batch_size`"));
  EXPECT_THAT(override_error("num_tasks=1001"), HasSubstr("config key `num_tasks`"));
  EXPECT_THAT(override_error("seed=18446744073709551616"), HasSubstr("config key `seed`"));
  EXPECT_THAT(override_error("lr=1e400"), HasSubstr("config key `lr`"));
  EXPECT_THAT(
      override_error("hidden_dims=[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,"
                     "20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,"
                     "41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,"
                     "62,63,64,65]"),
      HasSubstr(
          "got 65 elements; expected a non-empty list of integers in [1, 1048576] (at most 64)"));
  EXPECT_THAT(override_error("class_order=[0,1,2,3,4,5,6,7,8,9,0]"), HasSubstr("(at most 10)"));
  // A model beyond 2^30 parameters is refused before anything is allocated.
  const std::string msg = validate_error({"hidden_dims=[1048576,1048576]"});
  EXPECT_THAT(msg, HasSubstr("config key `hidden_dims`: [1048576,1048576]"));
  EXPECT_THAT(msg, HasSubstr("parameters"));
  EXPECT_THAT(validate_error({"benchmark=permuted", "num_tasks=1000", "algorithm=independent",
                              "hidden_dims=[2048]"}),
              HasSubstr("algorithm=independent, benchmark=permuted, num_tasks=1000"));
  EXPECT_NO_THROW({
    ExperimentConfig c;
    apply_override(c, "hidden_dims=[1048576]");
    validate(c);
  });
  // The MLP's keys are refused with a convolutional backbone rather than silently ignored.
  EXPECT_THAT(validate_error({"backbone=cnn", "hidden_dims=[128]"}),
              HasSubstr("config key `hidden_dims`: applies only to backbone=mlp"));
  EXPECT_THAT(validate_error({"backbone=resnet18", "batch_norm=true"}),
              HasSubstr("config key `batch_norm`: applies only to backbone=mlp"));
  EXPECT_NO_THROW({
    ExperimentConfig c;
    apply_override(c, "backbone=cnn");
    apply_override(c, "hidden_dims=[256,256]");  // the default, as configs/*.yaml write it
    validate(c);
  });
  // LwF keeps a teacher copy, EWC a Fisher and θ* per task: the same backbone is too large there.
  EXPECT_THAT(validate_error({"algorithm=lwf", "hidden_dims=[1048576]"}),
              HasSubstr("with algorithm=lwf"));
  EXPECT_THAT(validate_error({"algorithm=ewc", "hidden_dims=[1048576]"}),
              HasSubstr("with algorithm=ewc"));
  EXPECT_THAT(validate_error({"num_tasks=20"}), HasSubstr("valid num_tasks: 1, 2, 5, 10"));
}

TEST(Config, OverrideValuesHaveTheLimitsOfAFile) {
  EXPECT_THAT(override_error("hidden_dims=" + std::string(100000, '[')),
              HasSubstr("config key `hidden_dims`: value nested deeper than 32 levels"));
  EXPECT_THAT(override_error("output_dir=" + std::string((1 << 20) + 1, 'x')),
              HasSubstr("config key `output_dir`: value of 1048577 bytes; at most 1048576"));
  EXPECT_THAT(override_error("epochs={a: 1}"), HasSubstr("config key `epochs`"));
  EXPECT_THAT(override_error("output_dir=a: b"), HasSubstr("got a mapping"));
}

TEST_F(YamlTest, KeysMustBePlainNames) {
  for (const auto& [text, kind] :
       std::vector<std::pair<std::string, std::string>>{{"epochs: 1\n[a, b]: 1\n", "got a list"},
                                                        {"{a: 1}: 2\n", "got a mapping"},
                                                        {"[]:\n", "got a list"},
                                                        {"~: 1\n", "got an empty (null) key"},
                                                        {"? [a]\n: 1\n", "got a list"}}) {
    SCOPED_TRACE(text);
    const fs::path p = write(text);
    const std::string msg = config_error([&] { load_config(p); });
    EXPECT_THAT(msg, HasSubstr(p.string()));
    EXPECT_THAT(msg, HasSubstr("a key must be a plain name such as `epochs`, " + kind));
    EXPECT_THAT(msg, HasSubstr("valid keys: experiment_name"));
  }
  EXPECT_THAT(config_error([&] { load_config(write("epochs: 1\n[a, b]: 1\n")); }),
              HasSubstr("line 2"));
}

TEST_F(YamlTest, DeepNestingRefusedBeforeParsing) {
  const std::string limit = "nesting deeper than 32 levels at line ";
  const std::string flow = "a: " + std::string(100000, '[') + std::string(100000, ']') + "\n";
  std::string msg = config_error([&] { load_config(write(flow)); });
  EXPECT_THAT(msg, HasSubstr(limit + "1, column 35"));
  std::string maps = "a: ";
  for (int i = 0; i < 100000; ++i)
    maps += "{a: ";
  EXPECT_THAT(config_error([&] { load_config(write(maps + "\n")); }), HasSubstr(limit + "1"));
  std::string dashes;
  for (int i = 0; i < 100000; ++i)
    dashes += "- ";
  EXPECT_THAT(config_error([&] { load_config(write("x:\n" + dashes + "1\n")); }),
              HasSubstr(limit + "2"));
  std::string block;  // block mappings, one level per line
  for (int i = 0; i < 40; ++i)
    block += std::string(static_cast<size_t>(i), ' ') + "k" + std::to_string(i) + ":\n";
  msg = config_error([&] { load_config(write(block)); });
  EXPECT_THAT(msg, HasSubstr(limit + "33"));
  EXPECT_THAT(msg, Not(HasSubstr("bad file")));
  // Brackets in comments and quoted text are not nesting.
  const std::string many(60, '[');
  const ExperimentConfig c =
      load_config(write("# " + many + "\ndata_dir: \"" + many + "\"  # " + many +
                        "\noutput_dir: '" + many + "''{'\nhidden_dims: [8, 4]\n"));
  EXPECT_EQ(c.data_dir, many);
  EXPECT_EQ(c.output_dir, many + "'{");
  EXPECT_EQ(c.hidden_dims, (std::vector<int64_t>{8, 4}));
}

TEST_F(YamlTest, OversizedFileRefused) {
  const std::string msg =
      config_error([&] { load_config(write("# " + std::string(1 << 20, 'x') + "\nepochs: 1\n")); });
  EXPECT_THAT(msg, HasSubstr("a config file is at most 1048576 bytes"));
}

TEST_F(YamlTest, CrlfAndUtf8ValuesLoad) {
  const ExperimentConfig c = load_config(write("epochs: 3\r\noutput_dir: r\xc3\xa9sultats\r\n"));
  EXPECT_EQ(c.epochs, 3);
  EXPECT_EQ(c.output_dir, "r\xc3\xa9sultats");
}

TEST_F(YamlTest, NonUtf8ValueNamesKeyAndLine) {
  const fs::path p = write("epochs: 1\noutput_dir: out\xff\n");
  std::string msg;
  try {
    load_config(p);
  } catch (const ConfigError& e) {
    msg = e.what();
  }
  // yaml-cpp may refuse the byte itself; either way a ConfigError naming the file.
  EXPECT_THAT(msg, HasSubstr(p.string()));
  if (!Value(msg, HasSubstr("YAML error"))) {
    EXPECT_THAT(msg, HasSubstr("line 2"));
    EXPECT_THAT(msg, HasSubstr("config key `output_dir`"));
  }
  const fs::path q = write("output_dir: \"a\\0b\"\n");
  EXPECT_THAT(config_error([&] { load_config(q); }), HasSubstr("control character"));
}

// ---- check_output_dir ----

TEST_F(YamlTest, OutputDirChecks) {
  auto io_error = [](const fs::path& dir) -> std::string {
    try {
      check_output_dir(dir);
    } catch (const clarena::IOError& e) {
      return e.what();
    }
    ADD_FAILURE() << "no IOError for " << dir;
    return "";
  };
  const fs::path file = dir_ / "a_file";
  std::ofstream(file) << "x";
  EXPECT_THAT(io_error(file),
              HasSubstr("output_dir '" + file.string() + "' is a file, not a folder"));
  EXPECT_THAT(io_error(file / "sub" / "run"), HasSubstr("'" + file.string() + "' is a file"));
  EXPECT_THAT(io_error("/proc/clarena_out"),
              HasSubstr("output_dir '/proc/clarena_out' lies under /proc"));
  EXPECT_THAT(io_error("/sys/clarena_out"), HasSubstr("lies under /sys"));
  EXPECT_THAT(io_error("/proc/self"), HasSubstr("lies under /proc"));
  fs::create_directories(dir_ / "run");
  std::ofstream(dir_ / "run" / "checkpoint") << "x";
  EXPECT_THAT(io_error(dir_ / "run"), HasSubstr("where the checkpoint folder goes"));
  // Fine: a new nested folder (nothing is created) and an existing empty one.
  EXPECT_NO_THROW(check_output_dir(dir_ / "new" / "deeper"));
  EXPECT_FALSE(fs::exists(dir_ / "new"));
  fs::create_directories(dir_ / "empty");
  EXPECT_NO_THROW(check_output_dir(dir_ / "empty"));
  if (::geteuid() != 0) {  // root writes anywhere but on read-only mounts
    fs::create_directories(dir_ / "locked");
    fs::permissions(dir_ / "locked", fs::perms::owner_read | fs::perms::owner_exec);
    EXPECT_THAT(io_error(dir_ / "locked" / "run"), HasSubstr("cannot be created in"));
    EXPECT_THAT(io_error(dir_ / "locked"), HasSubstr("cannot be written"));
    fs::permissions(dir_ / "locked", fs::perms::owner_all);
  }
}
