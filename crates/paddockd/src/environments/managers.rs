//! What each package manager's build step runs, which Debian package provides
//! its tool (whose version goes into the layer key), and how a failure is
//! traced back to a package.
//!
//! Steps run as `/bin/sh -c SCRIPT sh PACKAGE...`: packages travel as
//! arguments, never spliced into the script. Registries come from the host's
//! own configuration, passed into the build container (see build.rs); nothing
//! here names one.

use super::packages::Manager;

/// The shell script of a step; `"$@"` are the normalized package specs.
pub fn script(m: Manager) -> &'static str {
    match m {
        Manager::Apt => {
            "set -e
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \"$@\"
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log /var/log/alternatives.log"
        }
        Manager::Cargo => {
            "set -e
need cargo
export CARGO_HOME=/tmp/.paddock-cargo
mkdir -p \"$CARGO_HOME\"
if [ -f /.paddock-build/cargo-config.toml ]; then cp /.paddock-build/cargo-config.toml \"$CARGO_HOME/config.toml\"; fi
for p in \"$@\"; do
  case \"$p\" in
    *@*) cargo install --locked --root /usr/local \"${p%@*}\" --version \"=${p#*@}\" ;;
    *) cargo install --locked --root /usr/local \"$p\" ;;
  esac
done
rm -rf \"$CARGO_HOME\""
        }
        Manager::Gem => {
            "set -e
need gem
for p in \"$@\"; do
  case \"$p\" in
    *:*) gem install --no-document \"${p%%:*}\" -v \"${p#*:}\" ;;
    *) gem install --no-document \"$p\" ;;
  esac
done
rm -rf /root/.gem /root/.local/share/gem"
        }
        Manager::Go => {
            "set -e
need go
export GOPATH=/tmp/.paddock-go GOCACHE=/tmp/.paddock-go/cache GOBIN=/usr/local/bin GOTOOLCHAIN=local
for p in \"$@\"; do go install \"$p\"; done
chmod -R u+w /tmp/.paddock-go 2>/dev/null || true
rm -rf /tmp/.paddock-go"
        }
        Manager::Npm => {
            "set -e
need npm
npm install --global --no-fund --no-audit --no-update-notifier \"$@\"
npm cache clean --force >/dev/null 2>&1 || true
rm -rf /root/.npm"
        }
        Manager::Pip => {
            "set -e
need python3
python3 -m pip install --no-cache-dir --break-system-packages --root-user-action=ignore --no-warn-script-location \"$@\""
        }
    }
}

/// Prepended to every script: a missing tool is named, with the fix.
pub const PRELUDE: &str = "need() { command -v \"$1\" >/dev/null 2>&1 || { echo \"paddock: this step needs '$1' in the image; add the Debian package that provides it to packages.apt\" >&2; exit 127; }; }
";
/// What PRELUDE prints when the tool is missing: no package is to blame.
const MISSING_TOOL: &str = "paddock: this step needs";

/// Debian packages that provide the step's tool, in order of preference; the
/// first one installed gives the tool version in the layer key.
pub fn tool_packages(m: Manager) -> &'static [&'static str] {
    match m {
        Manager::Apt => &["apt"],
        // cargo-web: bookworm's current toolchain (plain `cargo` there predates the sparse index).
        Manager::Cargo => &["cargo-web", "cargo"],
        Manager::Gem => &["ruby-rubygems", "ruby"],
        Manager::Go => &["golang-go"],
        Manager::Npm => &["npm"],
        Manager::Pip => &["python3-pip"],
    }
}

/// The Debian packages a toolchain layer installs for a manager whose tool
/// the environment does not provide (toolchains.rs). cargo's is `cargo-web`:
/// bookworm's plain `cargo` (0.66) predates the sparse index protocol the
/// crate registry serves, `cargo-web` is bookworm's current toolchain.
pub fn toolchain(m: Manager) -> &'static [&'static str] {
    match m {
        Manager::Apt => &[],
        Manager::Cargo => &["cargo-web"],
        Manager::Gem => &["ruby"],
        Manager::Go => &["golang-go"],
        Manager::Npm => &["npm"],
        Manager::Pip => &["python3-pip"],
    }
}

/// The command a step needs (what its script's `need` checks).
pub fn tool_command(m: Manager) -> &'static str {
    match m {
        Manager::Apt => "apt-get",
        Manager::Cargo => "cargo",
        Manager::Gem => "gem",
        Manager::Go => "go",
        Manager::Npm => "npm",
        Manager::Pip => "pip3",
    }
}

/// A toolchain step: the apt step, which needs apt-get in the image.
pub fn toolchain_script() -> String {
    format!("need apt-get\n{}", script(Manager::Apt))
}

/// Variables every session on an image with this step's layer needs.
pub fn image_env(m: Manager) -> &'static [(&'static str, &'static str)] {
    match m {
        // `npm install --global` puts modules here; require() finds them by NODE_PATH.
        Manager::Npm => &[("NODE_PATH", "/usr/local/lib/node_modules")],
        _ => &[],
    }
}

/// The package a failed step's output blames, if it names one: the entry whose
/// name occurs on the last error-looking line that names any entry.
pub fn blame<'a>(m: Manager, specs: &'a [String], output: &str) -> Option<&'a str> {
    const MARKERS: &[&str] = &[
        "error",
        "E:",
        "ERR!",
        "not found",
        "No matching",
        "Unable to locate",
        "could not",
        "Could not",
        "no matching",
        "404",
        "cannot",
        "unknown",
    ];
    if output.contains(MISSING_TOOL) {
        return None;
    }
    let names: Vec<(&str, &str)> = specs.iter().map(|s| (m.package_name(s), s.as_str())).collect();
    for line in output.lines().rev().filter(|l| MARKERS.iter().any(|k| l.contains(k))) {
        // Longest names first: `six` must not claim a line about `sixer`.
        let mut hits: Vec<&(&str, &str)> = names.iter().filter(|(n, _)| mentions(line, n)).collect();
        hits.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
        if let Some((_, spec)) = hits.first() {
            return Some(spec);
        }
    }
    (specs.len() == 1).then(|| specs[0].as_str())
}

/// Whether `line` mentions `name` as a word (case-insensitive).
fn mentions(line: &str, name: &str) -> bool {
    let (line, name) = (line.to_lowercase(), name.to_lowercase());
    let word = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
    line.match_indices(&name).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = line[i + name.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(|c| word(c) && c != '.')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blames_the_package_the_output_names() {
        let specs = vec!["jq".to_string(), "no-such-pkg-xyz".to_string()];
        let out = "Reading package lists...\nE: Unable to locate package no-such-pkg-xyz\n";
        assert_eq!(blame(Manager::Apt, &specs, out), Some("no-such-pkg-xyz"));
        let specs = vec!["six==99.0".to_string(), "sixer".to_string()];
        let out = "ERROR: Could not find a version that satisfies the requirement six==99.0\n\
                   ERROR: No matching distribution found for six==99.0\n";
        assert_eq!(blame(Manager::Pip, &specs, out), Some("six==99.0"));
        assert_eq!(blame(Manager::Pip, &specs, "network down\n"), None);
    }
}
