# pip builds each install in a fresh temporary environment, so pybind11's headers arrive under a
# new path every time. That path is in every compiler command line, and ninja rebuilds whatever
# command line changed: every re-install recompiled everything. Compiling against a copy inside
# the build folder, whose files are rewritten only when their contents change, keeps the command
# lines and the objects of an unchanged source tree.
function(convkit_use_stable_pybind11_headers)
  set(dest "${CMAKE_BINARY_DIR}/pybind11-include")
  file(GLOB_RECURSE headers RELATIVE "${pybind11_INCLUDE_DIR}" "${pybind11_INCLUDE_DIR}/*.h")
  foreach(h IN LISTS headers)
    get_filename_component(dir "${dest}/${h}" DIRECTORY)
    file(MAKE_DIRECTORY "${dir}")
    file(COPY_FILE "${pybind11_INCLUDE_DIR}/${h}" "${dest}/${h}" ONLY_IF_DIFFERENT)
  endforeach()
  set_property(TARGET pybind11::pybind11_headers PROPERTY INTERFACE_INCLUDE_DIRECTORIES "${dest}")
endfunction()
