# Install rules and the CMake package (issue #13): `cmake --install build --prefix P` gives
#   P/include/cocolm/cocolm.h               the umbrella header of the public API
#   P/include/cocolm/{engine,kernels,model,coco}/...   the headers it needs (engine internals and the SIMT
#                                           emulator's headers are not installed)
#   P/lib/libcoco_*.{a,so}                  the layer libraries
#   P/lib/cmake/cocolm/cocolmConfig.cmake (+ ConfigVersion, Targets)
#   P/bin/coco                              the command-line tool
# A consumer writes `find_package(cocolm REQUIRED)` and `target_link_libraries(app PRIVATE cocolm::cocolm)`;
# per-layer targets: cocolm::runtime, cocolm::kernels, cocolm::engine, cocolm::model, cocolm::coco.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(cocolm_layer_targets coco_runtime coco_kernels coco_engine coco_model coco_objective)
set_target_properties(coco_runtime PROPERTIES EXPORT_NAME runtime)
set_target_properties(coco_kernels PROPERTIES EXPORT_NAME kernels)
set_target_properties(coco_engine PROPERTIES EXPORT_NAME engine)
set_target_properties(coco_model PROPERTIES EXPORT_NAME model)
set_target_properties(coco_objective PROPERTIES EXPORT_NAME coco)
# Consumers compile the installed headers as C++20.
target_compile_features(coco_runtime PUBLIC cxx_std_20)

add_library(cocolm INTERFACE)
target_link_libraries(cocolm INTERFACE coco_objective)
add_library(cocolm::cocolm ALIAS cocolm)

# Headers: every header of the layers a user programs against. engine/simt (the emulator), the runtime's
# internals (launch helper, counted CUDA calls, cuDNN/NCCL checks, counters) and engine/dist's MPI/NCCL internals
# stay in the source tree; the
# `library` tests compile every installed header against the installed tree, so a public header that reaches
# for one of them fails there.
set(cocolm_header_globs
    engine/*.h engine/ops/*.h engine/io/*.h engine/rng/*.h kernels/*.h model/*.h coco/*.h coco/interop/*.h)
foreach(pattern ${cocolm_header_globs})
  file(GLOB headers CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/${pattern})
  get_filename_component(subdir ${pattern} DIRECTORY)
  install(FILES ${headers} DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/cocolm/${subdir} COMPONENT development)
endforeach()
install(FILES cocolm/cocolm.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/cocolm COMPONENT development)
# Data parallelism (communicators, gradient synchronization, ZeRO); not their MPI/NCCL internals.
install(FILES engine/dist/communicator.h engine/dist/launch.h engine/dist/grad_sync.h engine/dist/zero.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/cocolm/engine/dist COMPONENT development)
install(FILES engine/runtime/cuda_api.h engine/runtime/dtype.h engine/runtime/check.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/cocolm/engine/runtime COMPONENT development)

install(TARGETS ${cocolm_layer_targets} cocolm EXPORT cocolmTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} ${CMAKE_INSTALL_INCLUDEDIR}/cocolm)
if(TARGET coco)
  set_target_properties(coco PROPERTIES INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR}")
  install(TARGETS coco RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  if(BUILD_SHARED_LIBS)
    install(TARGETS coco_tools_lib LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
  endif()
endif()
# RUNPATH is not inherited: every shared library finds its neighbours itself.
foreach(target ${cocolm_layer_targets} coco_tools_lib)
  set_target_properties(${target} PROPERTIES INSTALL_RPATH "$ORIGIN")
endforeach()

set(cocolm_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/cocolm)
install(EXPORT cocolmTargets NAMESPACE cocolm:: DESTINATION ${cocolm_cmake_dir} COMPONENT development)
# The toolkit this build used, so that the consumer's find_dependency(CUDAToolkit) finds the same one.
get_filename_component(cocolm_cuda_root "${CUDAToolkit_BIN_DIR}" DIRECTORY)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/cocolmConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/cocolmConfig.cmake INSTALL_DESTINATION ${cocolm_cmake_dir})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/cocolmConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/cocolmConfig.cmake ${PROJECT_BINARY_DIR}/cocolmConfigVersion.cmake
        DESTINATION ${cocolm_cmake_dir} COMPONENT development)
