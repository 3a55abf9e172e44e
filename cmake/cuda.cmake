# The CUDA backend: our .cu kernels and cuBLAS, compiled into clarena_kernels (whose objects
# make up clarena_core with core's own).
# Ampere and Hopper as real code, plus PTX for newer cards (set before enable_language so
# CMake's own probe does not pick a default architecture the toolkit no longer supports).
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES "80-real;90-real;90-virtual")
endif()
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)
# CMake 3.25 predates nvcc's C++20 support: tell it the flag (nvcc >= 12 accepts it).
if(CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 12.0 AND "${CMAKE_CUDA20_STANDARD_COMPILE_OPTION}" STREQUAL "")
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_COMPILE_FEATURES cuda_std_20)
  list(APPEND CMAKE_CUDA_COMPILE_FEATURES cuda_std_20)
endif()
set(CMAKE_CUDA_STANDARD 20)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
file(GLOB CLARENA_CUDA_SOURCES CONFIGURE_DEPENDS
     ${PROJECT_SOURCE_DIR}/kernels/cuda/*.cu ${PROJECT_SOURCE_DIR}/kernels/cuda/*.cpp)
target_sources(clarena_kernels PRIVATE ${CLARENA_CUDA_SOURCES})
set_target_properties(clarena_kernels PROPERTIES CUDA_ARCHITECTURES "${CMAKE_CUDA_ARCHITECTURES}")
target_compile_definitions(clarena_kernels PUBLIC CLARENA_HAS_CUDA=1)
target_compile_definitions(clarena_core PUBLIC CLARENA_HAS_CUDA=1)
target_compile_options(clarena_kernels PRIVATE
  $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra --expt-relaxed-constexpr>)
target_link_libraries(clarena_kernels PRIVATE CUDA::cudart CUDA::cublas)
target_link_libraries(clarena_core PUBLIC CUDA::cudart CUDA::cublas)
