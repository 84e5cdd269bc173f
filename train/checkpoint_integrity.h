// The integrity header of a checkpoint file: a 512-byte HDF5 user block
// (HDF5 itself ignores it) holding magic, header version, file length and
// the XXH64 of everything after the hash field. Written after HDF5 has
// closed the temporary file, verified before HDF5 parses a single byte, so
// truncation and flipped bits are reported instead of reaching HDF5's parser
// or silently changing weights. Layout in docs/checkpoint-format.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "train/hdf5_raii.h"

namespace tfm::train {

inline constexpr std::size_t kUserBlock = 512;  // HDF5 data starts here in files we write
inline constexpr unsigned char kMagic[8] = {'T', 'F', 'M', 'C', 'K', 'P', 'T', '\0'};
inline constexpr unsigned char kHdf5Signature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
inline constexpr uint64_t kHeaderVersion = 1;
// Header layout (little-endian): [0,8) magic, [8,16) XXH64 (seed 0) of bytes
// [16, EOF), [16,24) header version, [24,32) file length, then a text note,
// zero padded to 512 bytes.
inline constexpr std::size_t kHashOffset = 8;
inline constexpr std::size_t kHashedFrom = 16;
inline constexpr char kHeaderNote[] =
    "\ntfm checkpoint: HDF5 file with a 512-byte user block; see docs/checkpoint-format.md\n";


// Fills the user block of the closed temporary file `tmp` with the header
// and fsyncs the file.
void write_integrity_header(const Hdf5Context& c, const std::string& tmp);

// Verifies the header of a file we wrote: `head` holds its first bytes, `fd`
// is open on it and c.file_size is its size. Throws naming what is wrong.
void verify_integrity_header(const Hdf5Context& c, int fd, const unsigned char* head);

// What the first bytes of a file say about it.
enum class FileKind { tfm_header, plain_hdf5, damaged_header, not_hdf5 };
FileKind sniff(const unsigned char* head, std::size_t n);

// The cheap check of is_checkpoint(): known header version, recorded length
// equal to the file size, HDF5 signature after the user block (no checksum).
bool header_is_plausible(const unsigned char* head, uint64_t file_size);

}  // namespace tfm::train
