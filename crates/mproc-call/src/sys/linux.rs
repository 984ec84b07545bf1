//! Linux: the GNU build-id note of the main executable, found through
//! `dl_iterate_phdr` (the first object it reports is the program itself).

use std::os::raw::{c_int, c_void};

const NT_GNU_BUILD_ID: u32 = 3;

/// The executable's `.note.gnu.build-id`, if the linker wrote one.
pub(crate) fn embedded_build_id() -> Option<Vec<u8>> {
    let mut found: Option<Vec<u8>> = None;
    // SAFETY: the callback gets a valid `dl_phdr_info` for each loaded
    // object and our `found` as its data pointer, which outlives the call.
    unsafe {
        libc::dl_iterate_phdr(
            Some(first_object),
            (&mut found as *mut Option<Vec<u8>>).cast(),
        );
    }
    found
}

/// `dl_iterate_phdr`'s callback: reads the notes of the first object (the
/// program) and stops.
unsafe extern "C" fn first_object(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut c_void,
) -> c_int {
    // SAFETY: (1) `data` is the `&mut Option<Vec<u8>>` passed above; (2)
    // `info` is valid for the call and its `dlpi_phdr` array holds
    // `dlpi_phnum` program headers; (3) a PT_NOTE segment is mapped at
    // `dlpi_addr + p_vaddr` for `p_memsz` bytes, and every read below stays
    // inside it (checked against `end`) and uses unaligned reads.
    unsafe {
        let found = &mut *data.cast::<Option<Vec<u8>>>();
        let info = &*info;
        let headers = std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum));
        for ph in headers.iter().filter(|ph| ph.p_type == libc::PT_NOTE) {
            let mut at = (info.dlpi_addr + ph.p_vaddr) as usize;
            let end = at + ph.p_memsz as usize;
            while at + 12 <= end {
                let word = |i: usize| std::ptr::read_unaligned((at + 4 * i) as *const u32);
                let (namesz, descsz, kind) = (word(0) as usize, word(1) as usize, word(2));
                let name_at = at + 12;
                let desc_at = name_at + namesz.next_multiple_of(4);
                let next = desc_at + descsz.next_multiple_of(4);
                if next > end {
                    break;
                }
                let name = std::slice::from_raw_parts(name_at as *const u8, namesz);
                if kind == NT_GNU_BUILD_ID && name == b"GNU\0" {
                    let desc = std::slice::from_raw_parts(desc_at as *const u8, descsz);
                    *found = Some(desc.to_vec());
                    return 1;
                }
                at = next;
            }
        }
    }
    // Only the first object is the program: stop either way.
    1
}
