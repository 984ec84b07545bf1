//! macOS: the `LC_UUID` load command of the main executable's Mach-O
//! header (image 0 of dyld).

const LC_UUID: u32 = 0x1b;

/// The executable's `LC_UUID`, if the linker wrote one.
pub(crate) fn embedded_build_id() -> Option<Vec<u8>> {
    // SAFETY: image 0 is the main executable, loaded for the life of the
    // process; its header is followed by `sizeofcmds` bytes of load
    // commands, each starting with `cmd` and `cmdsize`, which bound every
    // read below (unaligned reads, all inside the commands).
    unsafe {
        let header = libc::_dyld_get_image_header(0);
        if header.is_null() {
            return None;
        }
        let h = std::ptr::read_unaligned(header.cast::<libc::mach_header_64>());
        let mut at = header as usize + std::mem::size_of::<libc::mach_header_64>();
        let end = at + h.sizeofcmds as usize;
        for _ in 0..h.ncmds {
            if at + 8 > end {
                break;
            }
            let cmd = std::ptr::read_unaligned(at as *const u32);
            let size = std::ptr::read_unaligned((at + 4) as *const u32) as usize;
            if size < 8 || at + size > end {
                break;
            }
            if cmd == LC_UUID && size >= 24 {
                let uuid = std::slice::from_raw_parts((at + 8) as *const u8, 16);
                return Some(uuid.to_vec());
            }
            at += size;
        }
        None
    }
}
