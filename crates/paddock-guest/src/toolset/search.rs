//! `glob` and `grep`, with the reference tools' limits and texts.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use paddock_proto::toolset::{GlobInput, GrepInput};
use paddock_proto::v1::ExecRequest;

use super::paths::{canonicalize, resolve, within};
use super::{text, Outcome};
use crate::exec::{self, ExecLimits};
use crate::reaper::Reaper;

const GLOB_RESULT_LIMIT: usize = 200;
const WALK_MAX_ENTRIES: usize = 50_000;
const GREP_OUTPUT_LIMIT: usize = 100 * 1024;
const GREP_MAX_LINE_LENGTH: usize = 2000;
/// What is read of rg's output before it is cut to GREP_OUTPUT_LIMIT (which
/// counts characters, so up to four bytes each).
const RG_OUTPUT_CAP: usize = 4 * GREP_OUTPUT_LIMIT + 4;
/// rg is bounded by the sandbox's limits; this keeps a pathological search
/// from holding the call forever.
const RG_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

fn search_root(workdir: &Path, path: Option<&str>, op: &str) -> Result<PathBuf, String> {
    match path.filter(|p| !p.is_empty()) {
        Some(p) => resolve(workdir, p).map_err(|e| format!("{op}: {e}")),
        None => Ok(canonicalize(workdir).unwrap_or_else(|_| workdir.to_path_buf())),
    }
}

pub fn glob(workdir: &Path, input: GlobInput) -> Outcome {
    let pattern = input.pattern.as_str();
    if pattern.starts_with('/') {
        return Err(
            "glob: absolute pattern not permitted; pass a relative pattern (and optionally path)".into()
        );
    }
    if pattern.split('/').any(|part| part == "..") {
        return Err("glob: '..' is not permitted in the pattern".into());
    }
    if pattern.is_empty() {
        return Err("glob: Unacceptable pattern: ''".into());
    }
    let root = search_root(workdir, input.path.as_deref(), "glob")?;
    let full = format!("{}/{}", glob::Pattern::escape(&root.to_string_lossy()), pattern);
    let paths = glob::glob(&full).map_err(|e| format!("glob: {e}"))?;
    let mut matches: Vec<(SystemTime, PathBuf)> = paths
        .filter_map(Result::ok)
        .take(WALK_MAX_ENTRIES)
        // A symlink followed mid-pattern must not lead a result out of the root.
        .filter(|m| canonicalize(m).is_ok_and(|c| within(&c, &root)))
        .map(|m| (std::fs::metadata(&m).and_then(|md| md.modified()).unwrap_or(SystemTime::UNIX_EPOCH), m))
        .collect();
    if matches.is_empty() {
        return Ok(text("no matches".into()));
    }
    // Newest first; the sort is stable, as Python's.
    matches.sort_by(|a, b| b.0.cmp(&a.0));
    let listed: Vec<String> =
        matches.iter().take(GLOB_RESULT_LIMIT).map(|(_, p)| p.to_string_lossy().into_owned()).collect();
    Ok(text(listed.join("\n")))
}

pub async fn grep(reaper: &Reaper, workdir: &Path, env: &[(String, String)], input: GrepInput) -> Outcome {
    let search = search_root(workdir, input.path.as_deref(), "grep")?;
    if let Some(rg) = find_rg(workdir, env) {
        // Through the guest's own spawn: it is PID 1 and reaps every child, so
        // a child it did not spawn itself would lose its exit status.
        let request = ExecRequest {
            argv: vec![
                rg.to_string_lossy().into_owned(),
                "--no-config".into(),
                "-n".into(),
                "--no-heading".into(),
                "-e".into(),
                input.pattern.clone(),
                "--".into(),
                search.to_string_lossy().into_owned(),
            ],
            ..Default::default()
        };
        let limits = ExecLimits { timeout: RG_TIMEOUT, output_limit: RG_OUTPUT_CAP };
        let out =
            exec::run(reaper, env, request, limits).await.map_err(|e| format!("grep: rg failed: {e}"))?;
        return match out.exit_code {
            Some(0) => {
                let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
                if s.chars().count() > GREP_OUTPUT_LIMIT {
                    s = s.chars().take(GREP_OUTPUT_LIMIT).collect();
                    s.push_str(&format!("\n[output truncated at {GREP_OUTPUT_LIMIT} bytes]"));
                }
                Ok(text(s))
            }
            Some(1) => Ok(text("no matches".into())),
            _ => Err(format!("grep: rg failed: {}", String::from_utf8_lossy(&out.stderr))),
        };
    }
    let rx = regex::Regex::new(&input.pattern).map_err(|e| format!("grep: invalid regex: {e}"))?;
    let pattern_search = search.clone();
    tokio::task::spawn_blocking(move || walk_grep(&rx, &pattern_search))
        .await
        .map_err(|e| format!("grep: {e}"))
        .map(text)
}

/// The first `rg` on PATH that is not inside the working directory (a file the
/// model could have written there must not run as the search tool).
fn find_rg(workdir: &Path, env: &[(String, String)]) -> Option<PathBuf> {
    let path = env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str()).unwrap_or("/usr/bin:/bin");
    let root = canonicalize(workdir).unwrap_or_else(|_| workdir.to_path_buf());
    path.split(':').filter(|d| d.starts_with('/')).map(|d| Path::new(d).join("rg")).find(|candidate| {
        let Ok(real) = std::fs::canonicalize(candidate) else { return false };
        let executable = std::fs::metadata(&real).is_ok_and(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.is_file() && m.permissions().mode() & 0o111 != 0
        });
        executable && !within(&real, &root)
    })
}

/// The built-in search, used when the sandbox has no ripgrep: skips binary
/// files, symlinks, `.git` and `node_modules`, and lines over 2000 bytes.
fn walk_grep(rx: &regex::Regex, search: &Path) -> String {
    let mut hits: Vec<String> = Vec::new();
    let mut budget = GREP_OUTPUT_LIMIT as i64;
    let mut scan = |full: &Path, hits: &mut Vec<String>| -> bool {
        let mut emit = |line_no: usize, raw: &[u8]| -> bool {
            let line = String::from_utf8_lossy(raw);
            let line = line.trim_end_matches(['\r', '\n']);
            if !rx.is_match(line) {
                return true;
            }
            let hit = format!("{}:{line_no}:{line}", full.display());
            budget -= hit.chars().count() as i64 + 1;
            if budget < 0 {
                hits.push(format!("[output truncated at {GREP_OUTPUT_LIMIT} bytes]"));
                return false;
            }
            hits.push(hit);
            true
        };
        for_each_short_line(full, &mut emit)
    };
    if search.is_file() {
        scan(search, &mut hits);
    } else {
        let mut seen = 0;
        let mut stack = vec![search.to_path_buf()];
        'walk: while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            let mut entries: Vec<_> = entries.flatten().collect();
            entries.sort_by_key(|e| e.file_name());
            let mut subdirs = Vec::new();
            for e in entries {
                let Ok(ft) = e.file_type() else { continue };
                let name = e.file_name();
                if ft.is_dir() {
                    if name != ".git" && name != "node_modules" {
                        subdirs.push(e.path());
                    }
                } else if ft.is_file() {
                    seen += 1;
                    if seen > WALK_MAX_ENTRIES || !scan(&e.path(), &mut hits) {
                        break 'walk;
                    }
                }
            }
            stack.extend(subdirs.into_iter().rev());
        }
    }
    if hits.is_empty() {
        "no matches".into()
    } else {
        hits.join("\n")
    }
}

/// Calls `f` with each line (1-based number, bytes with its newline) of a text
/// file, streaming: lines longer than the grep limit are skipped without being
/// held in memory, and a file with a NUL in its first 512 bytes is skipped as
/// binary. Returns false when `f` asked to stop.
fn for_each_short_line(path: &Path, f: &mut dyn FnMut(usize, &[u8]) -> bool) -> bool {
    use std::io::BufRead;
    let Ok(file) = std::fs::File::open(path) else { return true };
    let mut reader = std::io::BufReader::with_capacity(64 * 1024, file);
    let mut line = Vec::new();
    let (mut line_no, mut too_long, mut first) = (1usize, false, true);
    loop {
        let chunk = match reader.fill_buf() {
            Ok(c) if c.is_empty() => break,
            Ok(c) => c,
            Err(_) => return true,
        };
        if first {
            first = false;
            if chunk[..chunk.len().min(512)].contains(&0) {
                return true;
            }
        }
        let (used, ends_line) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if !too_long {
            line.extend_from_slice(&chunk[..used]);
            too_long = line.len() > GREP_MAX_LINE_LENGTH;
        }
        reader.consume(used);
        if ends_line {
            if !too_long && !f(line_no, &line) {
                return false;
            }
            line.clear();
            too_long = false;
            line_no += 1;
        }
    }
    if !line.is_empty() && !too_long {
        return f(line_no, &line);
    }
    true
}
