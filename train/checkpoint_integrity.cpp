#include "train/checkpoint_integrity.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "train/posix_file.h"
#include "train/xxhash64.h"

namespace tfm::train {

void write_integrity_header(const Hdf5Context& c, const std::string& tmp) {
  Fd fd(::open(tmp.c_str(), O_RDWR | O_CLOEXEC));
  if (fd.get() < 0) c.fail("cannot reopen temporary file '" + tmp + "': " + errno_text(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) c.fail("cannot stat temporary file '" + tmp + "': " + errno_text(errno));
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size < kUserBlock + 8) c.fail("temporary file '" + tmp + "' is unexpectedly short");

  unsigned char header[kUserBlock] = {};
  std::memcpy(header, kMagic, 8);
  store_le64(header + 16, kHeaderVersion);
  store_le64(header + 24, size);
  std::memcpy(header + 32, kHeaderNote, sizeof(kHeaderNote) - 1);

  Xxh64 h;
  h.update(header + kHashedFrom, kUserBlock - kHashedFrom);
  std::vector<unsigned char> buf(std::size_t{1} << 20);
  for (uint64_t off = kUserBlock; off < size;) {
    const std::size_t want = static_cast<std::size_t>(std::min<uint64_t>(buf.size(), size - off));
    const ssize_t got = pread_full(fd.get(), buf.data(), want, static_cast<off_t>(off));
    if (got != static_cast<ssize_t>(want))
      c.fail("cannot read back temporary file '" + tmp + "': " + (got < 0 ? errno_text(errno) : "short read"));
    h.update(buf.data(), want);
    off += want;
  }
  store_le64(header + kHashOffset, h.digest());

  if (!pwrite_full(fd.get(), header, kUserBlock, 0))
    c.fail("cannot write header of temporary file '" + tmp + "': " + errno_text(errno));
  if (::fsync(fd.get()) != 0) c.fail("cannot fsync temporary file '" + tmp + "': " + errno_text(errno));
  if (const int err = fd.close()) c.fail("cannot close temporary file '" + tmp + "': " + errno_text(err));
}

void verify_integrity_header(const Hdf5Context& c, int fd, const unsigned char* head) {
  const uint64_t version = load_le64(head + 16);
  if (version == 0) c.fail("damaged checkpoint header (header version 0)");
  if (version > kHeaderVersion)
    c.fail("checkpoint header version " + std::to_string(version) + " is newer than this tfm supports (" +
           std::to_string(kHeaderVersion) + ")");
  const uint64_t length = load_le64(head + 24);
  if (length != c.file_size)
    c.fail("file is " + std::to_string(c.file_size) + " bytes but its header records " + std::to_string(length) +
           " (truncated or damaged)");
  Xxh64 h;
  std::vector<unsigned char> buf(std::size_t{1} << 20);
  for (uint64_t off = kHashedFrom; off < c.file_size;) {
    const std::size_t want = static_cast<std::size_t>(std::min<uint64_t>(buf.size(), c.file_size - off));
    const ssize_t got = pread_full(fd, buf.data(), want, static_cast<off_t>(off));
    if (got != static_cast<ssize_t>(want))
      c.fail("read error: " + (got < 0 ? errno_text(errno) : "file shrank while reading"));
    h.update(buf.data(), want);
    off += want;
  }
  if (h.digest() != load_le64(head + kHashOffset)) c.fail("checksum mismatch: the file is damaged");
}

FileKind sniff(const unsigned char* head, std::size_t n) {
  if (n >= kUserBlock + 8 && std::memcmp(head, kMagic, 8) == 0) return FileKind::tfm_header;
  if (n >= 8 && std::memcmp(head, kHdf5Signature, 8) == 0) return FileKind::plain_hdf5;
  if (n >= kUserBlock + 8 && std::memcmp(head + kUserBlock, kHdf5Signature, 8) == 0) return FileKind::damaged_header;
  return FileKind::not_hdf5;
}

bool header_is_plausible(const unsigned char* head, uint64_t file_size) {
  const uint64_t version = load_le64(head + 16);
  return version >= 1 && version <= kHeaderVersion && load_le64(head + 24) == file_size &&
         std::memcmp(head + kUserBlock, kHdf5Signature, 8) == 0;
}

}  // namespace tfm::train
