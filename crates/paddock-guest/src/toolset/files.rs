//! `read`, `write` and `edit`, with the reference tools' limits and texts.

use std::fs;
use std::io::Read;
use std::path::Path;

use base64::Engine;
use paddock_proto::toolset::{EditInput, ReadInput, WriteInput};
use paddock_proto::v1::content_block::Block;
use paddock_proto::v1::Base64Source;

use super::paths::{fs_error, resolve};
use super::{text, Outcome};

/// Cap on a whole-file read and on edit (both load the whole file).
const MAX_FILE_BYTES: u64 = 256 * 1024;
/// Images: the cap is on the base64 form; PDFs: on the raw bytes.
const MAX_IMAGE_BASE64_BYTES: u64 = 5 * 1024 * 1024;
const MAX_PDF_BYTES: u64 = 20 * 1024 * 1024;
const READ_CHUNK: usize = 64 * 1024;

fn media_type(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        _ => return None,
    })
}

pub fn read(workdir: &Path, input: ReadInput) -> Outcome {
    let file_path = input.file_path.as_str();
    let target = resolve(workdir, file_path).map_err(|e| format!("read: {e}"))?;
    // An empty list means no range, as in the reference.
    let view_range = input.view_range.filter(|v| !v.is_empty());
    if view_range.as_ref().is_some_and(|v| v.len() != 2) {
        return Err("read: view_range must be [start_line, end_line]".into());
    }
    // stat before open: the size cap stops a huge file from being loaded, and
    // FIFOs and devices are refused without opening them (that could block).
    let meta = fs::metadata(&target).map_err(|e| fs_error("read", file_path, &e))?;
    if !meta.file_type().is_file() {
        return Err(format!("read: {file_path}: not a regular file"));
    }
    let size = meta.len();
    if let Some(media_type) = media_type(&target) {
        if view_range.is_some() {
            return Err("read: view_range is not supported for image/PDF files".into());
        }
        let limit =
            if media_type == "application/pdf" { MAX_PDF_BYTES } else { (MAX_IMAGE_BASE64_BYTES / 4) * 3 };
        if size > limit {
            return Err(format!(
                "read: {file_path} is {size} bytes, exceeds {limit}-byte limit for image/PDF files."
            ));
        }
        let data = fs::read(&target).map_err(|e| fs_error("read", file_path, &e))?;
        let source = Base64Source {
            media_type: media_type.to_string(),
            data: base64::engine::general_purpose::STANDARD.encode(data),
        };
        let block =
            if media_type == "application/pdf" { Block::Document(source) } else { Block::Image(source) };
        return Ok(vec![block]);
    }
    let not_utf8 = || {
        format!("read: {file_path}: not valid UTF-8 text (binary files are only supported for image/PDF extensions)")
    };
    if size > MAX_FILE_BYTES {
        let Some(range) = view_range else {
            return Err(format!(
                "read: {file_path} is {size} bytes, exceeds {MAX_FILE_BYTES}-byte limit. \
                 Use the view_range parameter to read specific line ranges, e.g. view_range: [1, 500]."
            ));
        };
        let bytes = read_line_range(&target, file_path, range[0], range[1], MAX_FILE_BYTES as usize)?;
        return String::from_utf8(bytes).map(text).map_err(|_| not_utf8());
    }
    let data = fs::read(&target).map_err(|e| fs_error("read", file_path, &e))?;
    let content = String::from_utf8(data).map_err(|_| not_utf8())?;
    let Some(range) = view_range else { return Ok(text(content)) };
    let lines: Vec<&str> = content.split('\n').collect();
    let start = (range[0] - 1).max(0) as usize;
    let end = if range[1] > 0 { (range[1] as usize).min(lines.len()) } else { lines.len() };
    Ok(text(if start < end { lines[start..end].join("\n") } else { String::new() }))
}

/// Lines `[start_line, end_line]` (1-based, `end_line <= 0` for "to the end")
/// of a file too large to load, streamed, with at most `limit` bytes selected.
fn read_line_range(
    path: &Path,
    file_path: &str,
    start_line: i64,
    end_line: i64,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let start = (start_line - 1).max(0) as u64;
    let end = if end_line > 0 { end_line as u64 } else { u64::MAX };
    let mut collected = Vec::new();
    if end <= start {
        return Ok(collected);
    }
    let over = || {
        if end - start == 1 {
            format!(
                "read: line {} of {file_path} alone exceeds {limit}-byte limit. \
                 The read tool cannot return part of a line, so view_range cannot narrow this further.",
                start + 1
            )
        } else {
            format!(
                "read: view_range [{start_line}, {end_line}] of {file_path} exceeds {limit}-byte limit. \
                 Narrow the view_range to read a smaller portion."
            )
        }
    };
    let mut file = fs::File::open(path).map_err(|e| fs_error("read", file_path, &e))?;
    let mut line = 0u64;
    let mut buf = vec![0u8; READ_CHUNK];
    'chunks: loop {
        let n = file.read(&mut buf).map_err(|e| fs_error("read", file_path, &e))?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        let mut pos = 0;
        while pos < chunk.len() && line < end {
            let newline = chunk[pos..].iter().position(|b| *b == b'\n').map(|i| pos + i);
            let line_end = newline.unwrap_or(chunk.len());
            if line >= start {
                collected.extend_from_slice(&chunk[pos..line_end]);
                if newline.is_some() && line + 1 < end {
                    collected.push(b'\n');
                }
                if collected.len() > limit {
                    return Err(over());
                }
            }
            let Some(nl) = newline else { break };
            line += 1;
            pos = nl + 1;
        }
        if line >= end {
            break 'chunks;
        }
    }
    Ok(collected)
}

pub fn write(workdir: &Path, input: WriteInput) -> Outcome {
    let file_path = input.file_path.as_str();
    let target = resolve(workdir, file_path).map_err(|e| format!("write: {e}"))?;
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(|e| fs_error("write", file_path, &e))?;
    }
    fs::write(&target, input.content.as_bytes()).map_err(|e| fs_error("write", file_path, &e))?;
    // The reference counts characters (Python's len of a str).
    Ok(text(format!("wrote {} bytes to {file_path}", input.content.chars().count())))
}

pub fn edit(workdir: &Path, input: EditInput) -> Outcome {
    let file_path = input.file_path.as_str();
    let target = resolve(workdir, file_path).map_err(|e| format!("edit: {e}"))?;
    let meta = fs::metadata(&target).map_err(|e| fs_error("edit", file_path, &e))?;
    if !meta.file_type().is_file() {
        return Err(format!("edit: {file_path}: not a regular file"));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "edit: {file_path} is {} bytes, exceeds {MAX_FILE_BYTES}-byte limit. \
             The edit tool loads the whole file and cannot modify a file this large.",
            meta.len()
        ));
    }
    let data = fs::read(&target).map_err(|e| fs_error("edit", file_path, &e))?;
    let content = String::from_utf8(data)
        .map_err(|_| format!("edit: {file_path}: not valid UTF-8 text (cannot edit binary files)"))?;
    let count = content.matches(input.old_string.as_str()).count();
    if count == 0 {
        return Err(format!("edit: old_string not found in {file_path}"));
    }
    let replace_all = input.replace_all.unwrap_or(false);
    if !replace_all && count > 1 {
        return Err(format!("edit: old_string appears {count} times in {file_path} (must be unique)"));
    }
    let updated = if replace_all {
        content.replace(&input.old_string, &input.new_string)
    } else {
        content.replacen(&input.old_string, &input.new_string, 1)
    };
    fs::write(&target, updated.as_bytes()).map_err(|e| fs_error("edit", file_path, &e))?;
    Ok(text(format!("edited {file_path} ({} replacement(s))", if replace_all { count } else { 1 })))
}
