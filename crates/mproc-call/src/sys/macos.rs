//! macOS: the `LC_UUID` load command of the main executable's Mach-O
//! header (image 0 of dyld).

const LC_UUID: u32 = 0x1b;

/// `<mach-o/loader.h>`'s `mach_header_64`. Declared here, as is dyld's
/// function below: the `libc` crate deprecates its own bindings of both in
/// favour of the `mach2` crate, too much of a dependency for two names.
#[repr(C)]
#[derive(Clone, Copy)]
struct MachHeader64 {
    magic: u32,
    cputype: i32,
    cpusubtype: i32,
    filetype: u32,
    ncmds: u32,
    sizeofcmds: u32,
    flags: u32,
    reserved: u32,
}

extern "C" {
    /// `<mach-o/dyld.h>`: the header of loaded image `index` (0: the main
    /// executable), or null.
    fn _dyld_get_image_header(index: u32) -> *const MachHeader64;
}

/// The executable's `LC_UUID`, if the linker wrote one.
pub(crate) fn embedded_build_id() -> Option<Vec<u8>> {
    // SAFETY: image 0 is the main executable, loaded for the life of the
    // process; its header is followed by `sizeofcmds` bytes of load
    // commands, each starting with `cmd` and `cmdsize`, which bound every
    // read below (unaligned reads, all inside the commands).
    unsafe {
        let header = _dyld_get_image_header(0);
        if header.is_null() {
            return None;
        }
        let h = std::ptr::read_unaligned(header);
        let mut at = header as usize + std::mem::size_of::<MachHeader64>();
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
