//! The package registries `allow_package_managers` opens, read at start from
//! the host's own package-manager configuration (apt sources, pip.conf and
//! PIP_INDEX_URL, .npmrc, cargo's config.toml) and the operator's
//! `--package-registry` entries. Paddock names no registry itself: a manager
//! whose configuration names none (its built-in default) is opened by listing
//! that registry with `--package-registry`.

use std::path::{Path, PathBuf};

use super::policy::Rule;

/// The configuration files read when the operator names none.
pub fn default_config_files() -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut extra: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        extra.sort();
        files.extend(extra);
    }
    files.extend(
        ["/etc/pip.conf", "/etc/xdg/pip/pip.conf", "/etc/npmrc", "/usr/local/etc/npmrc"].map(PathBuf::from),
    );
    if let Some(home) = std::env::var_os("HOME").map(PathBuf::from) {
        for f in [".config/pip/pip.conf", ".pip/pip.conf", ".npmrc", ".cargo/config.toml", ".cargo/config"] {
            files.push(home.join(f));
        }
    }
    if let Some(cargo_home) = std::env::var_os("CARGO_HOME").map(PathBuf::from) {
        files.push(cargo_home.join("config.toml"));
    }
    files
}

/// The registries named in `files` (missing files are skipped), pip's index
/// variables, and the operator's entries (URLs or hosts), as policy rules. The
/// second value lists what was found, for the log.
pub fn read(files: &[PathBuf], read_env: bool, operator: &[String]) -> (Vec<Rule>, Vec<String>) {
    let mut urls = Vec::new();
    for f in files {
        if let Ok(text) = std::fs::read_to_string(f) {
            urls.extend(urls_in(f, &text));
        }
    }
    if read_env {
        for var in ["PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"] {
            if let Ok(v) = std::env::var(var) {
                urls.extend(v.split_whitespace().map(String::from));
            }
        }
    }
    urls.extend(operator.iter().cloned());
    let mut rules = Vec::new();
    let mut found = Vec::new();
    for u in urls {
        let u = u.trim_start_matches("sparse+").trim_start_matches("registry+").to_string();
        match Rule::parse_url_or_host(&u) {
            Ok(r) if !rules.contains(&r) => {
                rules.push(r);
                found.push(u);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("ignoring package registry {u:?}: it {e}"),
        }
    }
    (rules, found)
}

/// Registry URLs in one configuration file, by the file's kind.
fn urls_in(path: &Path, text: &str) -> Vec<String> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let lines = text.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.starts_with(';'));
    let http = |s: &str| s.starts_with("http://") || s.starts_with("https://");
    let value = |l: &str| l.split_once('=').map(|(_, v)| v.trim().trim_matches('"').to_string());
    match name {
        // One-line apt sources: `deb [options] URI suite components`.
        n if n.ends_with(".list") => lines
            .filter(|l| l.starts_with("deb"))
            .flat_map(|l| l.split_whitespace().find(|w| http(w)).map(String::from))
            .collect(),
        // deb822 apt sources: `URIs: a b`.
        n if n.ends_with(".sources") => lines
            .filter_map(|l| l.strip_prefix("URIs:"))
            .flat_map(|v| v.split_whitespace().filter(|w| http(w)).map(String::from).collect::<Vec<_>>())
            .collect(),
        // pip: index-url / extra-index-url, whose values may continue on
        // indented lines.
        n if n.ends_with("pip.conf") => {
            let mut out = Vec::new();
            let mut in_index = false;
            for raw in text.lines() {
                let l = raw.trim();
                if raw.starts_with([' ', '\t']) && in_index {
                    out.extend(l.split_whitespace().filter(|w| http(w)).map(String::from));
                    continue;
                }
                let key = l.split('=').next().unwrap_or("").trim();
                in_index = matches!(key, "index-url" | "extra-index-url" | "index_url" | "extra_index_url");
                if in_index {
                    out.extend(value(l).into_iter().flat_map(|v| {
                        v.split_whitespace().filter(|w| http(w)).map(String::from).collect::<Vec<_>>()
                    }));
                }
            }
            out
        }
        // npm: `registry=URL`, `@scope:registry=URL`.
        n if n.ends_with("npmrc") => lines
            .filter(|l| l.split('=').next().unwrap_or("").trim().ends_with("registry"))
            .filter_map(value)
            .filter(|v| http(v))
            .collect(),
        // cargo: `registry = "..."` / `index = "..."` in [source.*] and [registries.*].
        "config.toml" | "config" => lines
            .filter(|l| matches!(l.split('=').next().unwrap_or("").trim(), "registry" | "index"))
            .filter_map(value)
            .map(|v| v.trim_start_matches("sparse+").trim_start_matches("registry+").to_string())
            .filter(|v| http(v))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_kind() {
        let list = urls_in(
            Path::new("x.list"),
            "deb [arch=amd64] http://apt.test/debian bookworm main\n# deb http://no.test x",
        );
        assert_eq!(list, ["http://apt.test/debian"]);
        let sources = urls_in(Path::new("d.sources"), "Types: deb\nURIs: http://a.test/d https://b.test/d\n");
        assert_eq!(sources, ["http://a.test/d", "https://b.test/d"]);
        let pip = urls_in(
            Path::new("pip.conf"),
            "[global]\nindex-url = https://pypi.test/simple\nextra-index-url =\n    http://extra.test:8080/simple\ntimeout = 5\n",
        );
        assert_eq!(pip, ["https://pypi.test/simple", "http://extra.test:8080/simple"]);
        let npm = urls_in(Path::new(".npmrc"), "registry=https://npm.test/\n@me:registry=https://me.test/\n");
        assert_eq!(npm, ["https://npm.test/", "https://me.test/"]);
        let cargo = urls_in(
            Path::new("config.toml"),
            "[source.m]\nregistry = \"sparse+https://crates.test/index/\"\n",
        );
        assert_eq!(cargo, ["https://crates.test/index/"]);
    }
}
