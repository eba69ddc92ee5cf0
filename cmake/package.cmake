# The Debian package (`make package`, CPack's DEB generator): the two binaries in
# /usr/bin, the commented default configuration as a conffile in /etc/postern, the systemd
# unit (deploy/systemd/postern.service with /usr/bin paths; it runs as a dynamic user, so
# the package creates no account), the licence, README, docs/ and the example configs,
# and the man pages postern(8), postern-queue(8) and postern.toml(5) (man/). Shared-library dependencies are
# found by dpkg-shlibdeps. No maintainer scripts: the service is enabled by the operator
# (`systemctl enable --now postern`), after editing the configuration.
# tests/deploy/deb_package.py builds it, installs it into a scratch dpkg root, runs what
# it installed and removes it.
include(GNUInstallDirs)

install(TARGETS postern postern-load RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES ${CMAKE_SOURCE_DIR}/deploy/postern.toml DESTINATION /etc/postern)

file(READ ${CMAKE_SOURCE_DIR}/deploy/systemd/postern.service unit)
string(REPLACE "/usr/local/bin/" "/usr/bin/" unit "${unit}")
file(WRITE ${CMAKE_BINARY_DIR}/package/postern.service "${unit}")
install(FILES ${CMAKE_BINARY_DIR}/package/postern.service DESTINATION lib/systemd/system)
install(FILES ${CMAKE_SOURCE_DIR}/LICENSE DESTINATION ${CMAKE_INSTALL_DOCDIR} RENAME copyright)
install(FILES ${CMAKE_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
# The operator's pages (the man pages and the README point at them).
file(GLOB postern_docs ${CMAKE_SOURCE_DIR}/docs/*.md)
install(FILES ${postern_docs} DESTINATION ${CMAKE_INSTALL_DOCDIR}/docs)
install(DIRECTORY ${CMAKE_SOURCE_DIR}/deploy/examples DESTINATION ${CMAKE_INSTALL_DOCDIR})
if(POSTERN_MAN_PAGES)  # man/CMakeLists.txt
  install(FILES ${POSTERN_MAN_DIR}/postern.8.gz ${POSTERN_MAN_DIR}/postern-queue.8.gz
          DESTINATION ${CMAKE_INSTALL_MANDIR}/man8)
  install(FILES ${POSTERN_MAN_DIR}/postern.toml.5.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man5)
endif()

file(WRITE ${CMAKE_BINARY_DIR}/package/conffiles "/etc/postern/postern.toml\n")

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME postern)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "Postern <postern@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "SMTP edge relay: durable spool, fast forwarding")
set(CPACK_PACKAGE_DESCRIPTION
    "Postern accepts mail over SMTP, makes it durable in its own spool (fdatasync before\n every 250) and forwards it to smarthosts or MX hosts.")
set(CPACK_DEBIAN_PACKAGE_SECTION mail)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${CMAKE_BINARY_DIR}/package/conffiles)
set(CPACK_STRIP_FILES ON)
include(CPack)
