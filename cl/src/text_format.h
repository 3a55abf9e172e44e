// Locale-independent number formatting shared by the metrics and plot writers, so that two
// identical runs write byte-identical files whatever the process locale is.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <string>

namespace clarena::cl::detail {

/// Fixed notation with `precision` decimals ("0.950").
inline std::string format_fixed(double v, int precision) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed, precision);
  return std::string(buf, r.ptr);
}

/// Shortest round-trip text laid out like Python's repr(float): "0.95", "1.0", "1e-05".
/// CLArena writes its CSV cells through Python's csv module, which uses repr.
inline std::string format_repr(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  const std::string sci(buf, r.ptr);  // "-d.ddde+XX"
  const size_t e = sci.find('e');
  const int exp = std::atoi(sci.c_str() + e + 1);
  const bool neg = sci[0] == '-';
  std::string digits;
  for (size_t i = neg ? 1 : 0; i < e; ++i) {
    if (sci[i] != '.') digits += sci[i];
  }
  // Built by appends only: GCC 12 -O2 gives a false -Wrestrict on `"." + std::string&&`.
  std::string out = neg ? "-" : "";
  if (exp < -4 || exp >= 16) {  // Python switches to scientific outside [1e-4, 1e16)
    out.append(digits, 0, 1);
    if (digits.size() > 1) out.append(".").append(digits, 1);
    const int a = std::abs(exp);
    return out.append(exp < 0 ? "e-" : "e+").append(a < 10 ? "0" : "").append(std::to_string(a));
  }
  if (exp < 0) {
    return out.append("0.").append(static_cast<size_t>(-exp - 1), '0').append(digits);
  }
  const auto int_len = static_cast<size_t>(exp) + 1;
  if (digits.size() <= int_len) {
    return out.append(digits).append(int_len - digits.size(), '0').append(".0");
  }
  return out.append(digits, 0, int_len).append(".").append(digits, int_len);
}

}  // namespace clarena::cl::detail
