// The tfm command line: parses the command and dispatches; nothing else.
#include <malloc.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <new>
#include <iostream>

#include "tools/tools_cli.h"
#include "train/signals.h"

namespace {
// libgomp's default wait policy spins idle threads for a while after each
// parallel region; when another process holds a core, that spinning steals
// the time the working thread needs and small regions collapse (measured
// here: 73% of a training step in libgomp under load). tfm's kernels run on
// its own team (core/parallel.h, whose spinning is bounded and yields), and
// its oneDNN calls on one OpenMP thread each, so this guards only OpenMP
// regions some library might open: tfm defaults to the passive policy
// unless the user chose one. libgomp reads the variable only when it loads,
// so the process re-executes itself once with it set.
void default_to_passive_omp_wait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  tfm::train::prepare_exec();  // a signal that already arrived is delivered to the new image
  execv("/proc/self/exe", argv);  // returns only on failure: carry on with the default policy
  tfm::train::install_stop_handlers();  // and unblock the signals prepare_exec() blocked
}

// oneDNN JIT-compiles each new product shape into code buffers of 70 KB to
// 1.5 MB from malloc, freed once the kernel is built; translation batches
// bring new shapes every step (about 10 primitives per step in
// configs/translate_en_es.yaml). glibc's default raises its mmap threshold
// to the largest block freed, after which those buffers come from the heap
// and the small long-lived objects allocated between them pin it: the
// translator's resident size grew 1,229 -> 1,535 MB over 160 steps with
// 54 MB of malloc memory in use in 690 MB taken. A fixed threshold of
// 64 KiB hands such buffers straight back to the OS (rss 802 -> 805 MB over
// the same steps); tensors come from tfm's own allocator, not malloc.
void return_large_malloc_blocks() { mallopt(M_MMAP_THRESHOLD, 64 << 10); }
}  // namespace

// Before the static constructors of tfm's own files run (those of the shared
// libraries come first; nothing can run before the dynamic loader), so the
// window in which SIGINT/SIGTERM still kill the process outright is as
// short as it can be from inside it.
__attribute__((constructor(101))) static void install_handlers_early() { tfm::train::install_stop_handlers(); }

int main(int argc, char** argv) {
  tfm::train::install_stop_handlers();  // first: SIGINT/SIGTERM only set the stop flag from here on
  default_to_passive_omp_wait(argv);
  return_large_malloc_blocks();
  try {
    return tfm::train::parse_and_run(argc, argv, std::cin, std::cout, std::cerr);
  } catch (const std::bad_alloc&) {  // while parsing the command line, or writing the error itself
    std::fputs("tfm: error: out of memory (std::bad_alloc) while starting\n", stderr);
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tfm: error: %s\n", e.what());
    return 1;
  }
}
