/*
 * What Debian's gcc unwinder needs from a C library, for a static musl build of ptyreap.
 *
 * scripts/dist builds the x86_64 musl binary with Debian's rustc-web when rustup's musl standard
 * library cannot be had. Rust's std for musl then links `-lunwind`; scripts/dist hands it gcc's
 * own unwinder (libgcc_eh.a) plus this file under that name. Two things in libgcc_eh.a assume
 * glibc:
 *
 *  - it finds a PC's unwind tables with glibc's _dl_find_object (glibc 2.35). musl has none, so
 *    it is written here on dl_iterate_phdr, which musl has, static binaries included: the loaded
 *    object whose PT_LOAD segments hold the PC, and its PT_GNU_EH_FRAME (.eh_frame_hdr). The
 *    struct is glibc's layout for targets without an eh_dbase field (x86_64, aarch64).
 *  - it calls pthread_once and friends through weak references, which do not pull anything out
 *    of a static libc.a: unreferenced, they stay 0 and the first unwind jumps to address 0. The
 *    table below references them strongly, so musl's are linked.
 *
 * Checked by scripts/dist --check: the static binary's census, and by hand a panic caught with
 * catch_unwind, a panic in a thread, and a forced backtrace in a binary built the same way.
 */
#define _GNU_SOURCE
#include <link.h>
#include <pthread.h>
#include <stdint.h>

struct glibc_dl_find_object {
  unsigned long long flags;
  void *map_start;
  void *map_end;
  void *link_map;
  void *eh_frame;
  unsigned long long reserved[7];
};

struct lookup {
  uintptr_t pc;
  struct glibc_dl_find_object *found;
};

static int visit(struct dl_phdr_info *info, size_t size, void *data) {
  struct lookup *lookup = data;
  uintptr_t low = UINTPTR_MAX, high = 0;
  void *eh_frame = 0;
  int holds_pc = 0;
  (void)size;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *segment = &info->dlpi_phdr[i];
    uintptr_t start = info->dlpi_addr + segment->p_vaddr;
    if (segment->p_type == PT_LOAD) {
      if (lookup->pc >= start && lookup->pc < start + segment->p_memsz) holds_pc = 1;
      if (start < low) low = start;
      if (start + segment->p_memsz > high) high = start + segment->p_memsz;
    } else if (segment->p_type == PT_GNU_EH_FRAME) {
      eh_frame = (void *)start;
    }
  }
  if (!holds_pc) return 0;
  lookup->found->flags = 0;
  lookup->found->map_start = (void *)low;
  lookup->found->map_end = (void *)high;
  lookup->found->link_map = 0;
  lookup->found->eh_frame = eh_frame;
  return 1;
}

int _dl_find_object(void *pc, struct glibc_dl_find_object *result) {
  struct lookup lookup = {(uintptr_t)pc, result};
  return dl_iterate_phdr(visit, &lookup) ? 0 : -1;
}

void *const ptyreap_unwinder_needs[] __attribute__((used)) = {
    (void *)pthread_once,       (void *)pthread_mutex_lock,  (void *)pthread_mutex_unlock,
    (void *)pthread_key_create, (void *)pthread_getspecific, (void *)pthread_setspecific,
};
