//! What a FileInfo says beyond stat(2): the names of its owner and group, as
//! the sandbox's own /etc/passwd and /etc/group give them, and its
//! extended attributes in the `user.` namespace (where clients keep file
//! metadata of their own, E2B's among them).

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The `user.` namespace: the one unprivileged processes may write, so the
/// only one a file's metadata is read from and written to.
const USER_PREFIX: &str = "user.";
/// Largest attribute list and value read (the kernel's own limit is 64 KiB).
const XATTR_MAX: usize = 64 << 10;

/// uid and gid to names, read once per listing (a listing of thousands of
/// entries must not reread the files for each).
#[derive(Default)]
pub struct Names {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Names {
    /// From the files at their usual paths; a missing or unreadable file
    /// leaves its names empty.
    pub fn load() -> Self {
        Self { users: id_names(Path::new("/etc/passwd")), groups: id_names(Path::new("/etc/group")) }
    }

    pub fn user(&self, uid: u32) -> String {
        self.users.get(&uid).cloned().unwrap_or_default()
    }

    pub fn group(&self, gid: u32) -> String {
        self.groups.get(&gid).cloned().unwrap_or_default()
    }
}

/// `name:x:id:...` lines; the first name given an id wins, as in getpwuid.
fn id_names(file: &Path) -> HashMap<u32, String> {
    let mut names = HashMap::new();
    for line in std::fs::read_to_string(file).unwrap_or_default().lines() {
        let mut fields = line.split(':');
        let (Some(name), _, Some(id)) = (fields.next(), fields.next(), fields.next()) else { continue };
        if let Ok(id) = id.parse() {
            names.entry(id).or_insert_with(|| name.to_string());
        }
    }
    names
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// The `user.` attributes of `path` (not followed if a symlink), without
/// the prefix. A file system without xattrs has none.
pub fn user_xattrs(path: &Path) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let Ok(p) = c_path(path) else { return out };
    let mut names = vec![0u8; XATTR_MAX];
    // SAFETY: the buffer is valid for its length; the path is NUL-terminated.
    let n = unsafe { libc::llistxattr(p.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return out;
    }
    names.truncate(n as usize);
    let mut value = vec![0u8; XATTR_MAX];
    for name in names.split(|b| *b == 0).filter(|n| n.starts_with(USER_PREFIX.as_bytes())) {
        let Ok(cname) = CString::new(name) else { continue };
        // SAFETY: as above, for the value buffer and the attribute's name.
        let len =
            unsafe { libc::lgetxattr(p.as_ptr(), cname.as_ptr(), value.as_mut_ptr().cast(), value.len()) };
        if len < 0 {
            continue;
        }
        let (Ok(name), Ok(v)) = (std::str::from_utf8(name), std::str::from_utf8(&value[..len as usize]))
        else {
            continue;
        };
        out.insert(name[USER_PREFIX.len()..].to_string(), v.to_string());
    }
    out
}

/// Sets `user.<name>` attributes on an open file.
pub fn set_user_xattrs(file: &std::fs::File, attrs: &HashMap<String, String>) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    for (name, value) in attrs {
        if name.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "an extended attribute needs a name"));
        }
        let full = CString::new(format!("{USER_PREFIX}{name}"))
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "an attribute name contains NUL"))?;
        // SAFETY: the descriptor is open; name and value are valid for their lengths.
        let r = unsafe {
            libc::fsetxattr(file.as_raw_fd(), full.as_ptr(), value.as_ptr().cast(), value.len(), 0)
        };
        if r != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("setting the extended attribute user.{name}: {e}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_resolve_to_the_first_name_and_xattrs_round_trip() {
        let dir = std::env::temp_dir().join(format!("paddock-files-meta-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let passwd = dir.join("passwd");
        std::fs::write(&passwd, "root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/bash\nalias:x:1000:1000::/:\nbad line\n").unwrap();
        let names = id_names(&passwd);
        assert_eq!(names.get(&0).map(String::as_str), Some("root"));
        assert_eq!(names.get(&1000).map(String::as_str), Some("user"));
        let f = dir.join("f");
        let file = std::fs::File::create(&f).unwrap();
        let attrs: HashMap<String, String> = [("e2b.author".to_string(), "mish".to_string())].into();
        match set_user_xattrs(&file, &attrs) {
            // tmpfs before 6.6 and some others have no user xattrs.
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {}
            r => {
                r.unwrap();
                assert_eq!(user_xattrs(&f), attrs);
            }
        }
        assert!(set_user_xattrs(&file, &[(String::new(), "v".to_string())].into()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
