//! Loop devices, attached by ioctl (no `losetup` process): the daemon's disk
//! image and, with per-session filesystems, each session's image in it.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{bail, Context, Result};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` from linux/loop.h.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config` from linux/loop.h.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Attaches `image` to a free loop device (autoclear: it detaches when the
/// last user, the mount, goes). Returns the device and the open device file,
/// which must stay open until the mount holds the device.
pub fn attach_loop(image: &Path) -> Result<(String, File)> {
    let ctl = OpenOptions::new().read(true).write(true).open("/dev/loop-control").with_context(|| {
        "opening /dev/loop-control: the disk limit needs loop devices (load the loop module, or give \
         this container /dev/loop-control and /dev/loop*), or run with --disk-limit off"
    })?;
    let backing = OpenOptions::new().read(true).write(true).open(image)?;
    let mut name = [0u8; 64];
    let path = image.as_os_str().as_encoded_bytes();
    name[..path.len().min(63)].copy_from_slice(&path[..path.len().min(63)]);
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).context("finding a free loop device");
        }
        let device = format!("/dev/loop{n}");
        let dev = OpenOptions::new().read(true).write(true).open(&device).with_context(|| {
            format!(
                "opening {device} (the kernel made it; is /dev a devtmpfs?), or run with --disk-limit off"
            )
        })?;
        let config = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            block_size: 0,
            info: LoopInfo64 {
                device: 0,
                inode: 0,
                rdevice: 0,
                offset: 0,
                sizelimit: 0,
                number: 0,
                encrypt_type: 0,
                encrypt_key_size: 0,
                flags: LO_FLAGS_AUTOCLEAR,
                file_name: name,
                crypt_name: [0; 64],
                encrypt_key: [0; 32],
                init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: LOOP_CONFIGURE reads one struct loop_config.
        if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &config) } == 0 {
            return Ok((device, dev));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(e).with_context(|| format!("attaching {} to {device}", image.display()));
        }
        // Another process took that device between the two calls; try the next.
    }
    bail!("no free loop device for {} after 16 tries", image.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_config_matches_the_kernel_abi() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }
}
