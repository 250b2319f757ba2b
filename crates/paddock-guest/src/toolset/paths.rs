//! Paths as the reference tools see them: relative to the working directory,
//! `.` and `..` collapsed lexically, every symlink followed (a missing tail is
//! kept as spelled), and errors worded the same on every host.

use std::io;
use std::path::{Component, Path, PathBuf};

const MAX_SYMLINK_HOPS: usize = 40;

/// `p` resolved against `workdir` to a canonical path, or the reference tools'
/// error text: `path 'p': <reason>`.
pub fn resolve(workdir: &Path, p: &str) -> Result<PathBuf, String> {
    let candidate = Path::new(p);
    let full = if candidate.is_absolute() { candidate.to_path_buf() } else { workdir.join(candidate) };
    canonicalize(&full).map_err(|e| format!("path {}: {}", py_repr(p), fs_reason(&e)))
}

/// Lexical normalisation, like Python's `os.path.normpath` for absolute paths.
pub fn normpath(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

fn missing(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
}

/// Follows every symlink in `path`, keeping trailing components that do not
/// exist yet; more than 40 hops through dangling links count as a loop.
pub fn canonicalize(path: &Path) -> io::Result<PathBuf> {
    let mut prefix = normpath(path);
    let mut missing_tail: Vec<std::ffi::OsString> = Vec::new();
    let mut hops = 0;
    loop {
        let unresolved = match std::fs::canonicalize(&prefix) {
            Ok(p) => return Ok(missing_tail.iter().rev().fold(p, |acc, c| acc.join(c))),
            Err(e) if missing(&e) => e,
            Err(e) => return Err(e),
        };
        let is_symlink = match std::fs::symlink_metadata(&prefix) {
            Ok(m) => m.file_type().is_symlink(),
            Err(e) if missing(&e) && prefix.parent().is_some() => {
                missing_tail.push(prefix.file_name().unwrap_or_default().to_os_string());
                prefix = prefix.parent().unwrap().to_path_buf();
                continue;
            }
            Err(e) => return Err(e),
        };
        if !is_symlink {
            return Err(unresolved);
        }
        hops += 1;
        if hops > MAX_SYMLINK_HOPS {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        let parent = std::fs::canonicalize(prefix.parent().unwrap_or(Path::new("/")))?;
        let target = std::fs::read_link(&prefix)?;
        let joined = missing_tail.iter().rev().fold(parent.join(target), |acc, c| acc.join(c));
        prefix = normpath(&joined);
        missing_tail.clear();
    }
}

/// Whether `path` is `root` or below it.
pub fn within(path: &Path, root: &Path) -> bool {
    path.starts_with(root)
}

/// A file-system error as the reference tools word it.
pub fn fs_reason(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOENT) => "no such file or directory".into(),
        Some(libc::ENOTDIR) => "not a directory".into(),
        Some(libc::EISDIR) => "is a directory".into(),
        Some(libc::EACCES) | Some(libc::EPERM) => "permission denied".into(),
        Some(libc::EEXIST) => "file already exists".into(),
        Some(libc::ELOOP) => "too many levels of symbolic links".into(),
        Some(n) => strerror(n).to_lowercase(),
        None => e.to_string().to_lowercase(),
    }
}

fn strerror(n: i32) -> String {
    let s = io::Error::from_raw_os_error(n).to_string();
    // std renders "Message (os error N)".
    s.split(" (os error").next().unwrap_or(&s).to_string()
}

/// `op: file_path: reason`.
pub fn fs_error(op: &str, file_path: &str, e: &io::Error) -> String {
    format!("{op}: {file_path}: {}", fs_reason(e))
}

/// Python's `repr()` of a string, as it appears in the reference tools' errors.
pub fn py_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::new();
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normpath_collapses_dots() {
        assert_eq!(normpath(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(normpath(Path::new("/../x")), PathBuf::from("/x"));
    }

    #[test]
    fn repr_quotes_like_python() {
        assert_eq!(py_repr("a.txt"), "'a.txt'");
        assert_eq!(py_repr("it's"), "\"it's\"");
        assert_eq!(py_repr("a\nb"), "'a\\nb'");
    }
}
