# `cmake --install` puts headers, the libraries and a DenseSSMConfig.cmake with exported targets under the
# prefix; other projects then use find_package(DenseSSM) and link DenseSSM::densessm.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# Installed binaries find LibTorch where this build found it.
set_target_properties(densessm densessm_log densessm-info densessm-tokenizer densessm-prepare-data densessm-train densessm-generate densessm-convert densessm-bench PROPERTIES
  INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR}"
  INSTALL_RPATH_USE_LINK_PATH ON)

install(TARGETS densessm densessm_log EXPORT DenseSSMTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS densessm-info densessm-tokenizer densessm-prepare-data densessm-train densessm-generate densessm-convert densessm-bench RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY include/densessm DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY configs/ DESTINATION ${CMAKE_INSTALL_DATADIR}/densessm/configs)
install(EXPORT DenseSSMTargets NAMESPACE DenseSSM:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/DenseSSM)

configure_package_config_file(cmake/DenseSSMConfig.cmake.in
  ${PROJECT_BINARY_DIR}/DenseSSMConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/DenseSSM)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/DenseSSMConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/DenseSSMConfig.cmake ${PROJECT_BINARY_DIR}/DenseSSMConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/DenseSSM)
