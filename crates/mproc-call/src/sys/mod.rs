//! Every system call of this crate: where the running binary's build id
//! comes from.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub(crate) use linux::embedded_build_id;

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
pub(crate) use macos::embedded_build_id;

/// The bytes of the running executable (for a build without an embedded
/// id: its hash stands in).
pub(crate) fn executable_bytes() -> std::io::Result<Vec<u8>> {
    std::fs::read(std::env::current_exe()?)
}
