//! Package lists: the six managers in their install order, each entry checked
//! against its manager's own pin syntax and normalized, so that two spellings
//! of the same list give the same layer.

use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// The package managers, in the order their layers are stacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Manager {
    Apt,
    Cargo,
    Gem,
    Go,
    Npm,
    Pip,
}

impl Manager {
    pub const ALL: [Manager; 6] =
        [Manager::Apt, Manager::Cargo, Manager::Gem, Manager::Go, Manager::Npm, Manager::Pip];

    pub fn name(self) -> &'static str {
        match self {
            Manager::Apt => "apt",
            Manager::Cargo => "cargo",
            Manager::Gem => "gem",
            Manager::Go => "go",
            Manager::Npm => "npm",
            Manager::Pip => "pip",
        }
    }

    /// What a valid entry looks like, for error messages.
    fn syntax(self) -> &'static str {
        match self {
            Manager::Apt => "`name` or `name=version`",
            Manager::Cargo => "`name` or `name@1.2.3`",
            Manager::Gem => "`name` or `name:1.2.3`",
            Manager::Go => "`module/path@version`",
            Manager::Npm => "`name` or `name@1.2.3` (scoped: `@scope/name`)",
            Manager::Pip => "`name` or `name==1.2.3`",
        }
    }

    fn pattern(self) -> &'static Regex {
        static PATTERNS: OnceLock<Vec<Regex>> = OnceLock::new();
        let all = PATTERNS.get_or_init(|| {
            [
                // Debian policy: lowercase name; version epoch:upstream-revision.
                r"^[a-z0-9][a-z0-9+.-]+(=[0-9][A-Za-z0-9.+~:-]*)?$",
                r"^[A-Za-z0-9][A-Za-z0-9_-]*(@[0-9][0-9A-Za-z.+-]*)?$",
                r"^[A-Za-z0-9][A-Za-z0-9_.-]*(:[0-9][0-9A-Za-z.]*)?$",
                // A module path starts with a domain (a dot in its first element).
                r"^[a-z0-9][a-z0-9-]*(\.[a-z0-9-]+)+(/[A-Za-z0-9._~+-]+)*@[A-Za-z0-9][A-Za-z0-9._+-]*$",
                r"^(@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*(@[0-9A-Za-z][0-9A-Za-z.+-]*)?$",
                // PEP 508 name, optional extras, optional exact pin.
                r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?(\[[A-Za-z0-9._-]+(,[A-Za-z0-9._-]+)*\])?(==[0-9][0-9A-Za-z.+!*-]*)?$",
            ]
            .iter()
            .map(|p| Regex::new(p).expect("package pattern"))
            .collect()
        });
        &all[self as usize]
    }

    /// The name part of a valid entry (for matching it in a tool's output).
    pub fn package_name(self, spec: &str) -> &str {
        let cut = match self {
            Manager::Apt => spec.find('='),
            Manager::Cargo | Manager::Go => spec.find('@'),
            Manager::Npm => spec.get(1..).and_then(|s| s.find('@')).map(|i| i + 1),
            Manager::Gem => spec.find(':'),
            Manager::Pip => spec.find(['=', '[']),
        };
        &spec[..cut.unwrap_or(spec.len())]
    }
}

/// Package lists per manager, as an operator declares them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packages {
    #[serde(default)]
    pub apt: Vec<String>,
    #[serde(default)]
    pub cargo: Vec<String>,
    #[serde(default)]
    pub gem: Vec<String>,
    #[serde(default)]
    pub go: Vec<String>,
    #[serde(default)]
    pub npm: Vec<String>,
    #[serde(default)]
    pub pip: Vec<String>,
}

impl Packages {
    pub fn list(&self, m: Manager) -> &[String] {
        match m {
            Manager::Apt => &self.apt,
            Manager::Cargo => &self.cargo,
            Manager::Gem => &self.gem,
            Manager::Go => &self.go,
            Manager::Npm => &self.npm,
            Manager::Pip => &self.pip,
        }
    }

    fn list_mut(&mut self, m: Manager) -> &mut Vec<String> {
        match m {
            Manager::Apt => &mut self.apt,
            Manager::Cargo => &mut self.cargo,
            Manager::Gem => &mut self.gem,
            Manager::Go => &mut self.go,
            Manager::Npm => &mut self.npm,
            Manager::Pip => &mut self.pip,
        }
    }

    pub fn is_empty(&self) -> bool {
        Manager::ALL.iter().all(|m| self.list(*m).is_empty())
    }

    /// Checks every entry (the error names the field, e.g. `packages.pip[1]`)
    /// and returns the lists normalized: trimmed, names in their canonical
    /// case, sorted, duplicates removed.
    pub fn normalized(&self) -> Result<Packages, String> {
        let mut out = Packages::default();
        for m in Manager::ALL {
            let list = out.list_mut(m);
            for (i, raw) in self.list(m).iter().enumerate() {
                let spec = raw.trim();
                if !m.pattern().is_match(spec) {
                    return Err(format!(
                        "packages.{}[{i}]: {raw:?} is not a valid {} package; use {}",
                        m.name(),
                        m.name(),
                        m.syntax()
                    ));
                }
                list.push(normalize(m, spec));
            }
            list.sort();
            list.dedup();
        }
        Ok(out)
    }
}

fn normalize(m: Manager, spec: &str) -> String {
    match m {
        // PEP 503: names compare case-insensitively with runs of -_. equal.
        Manager::Pip => {
            let name = m.package_name(spec);
            let canonical = Regex::new(r"[-_.]+").unwrap().replace_all(&name.to_lowercase(), "-").to_string();
            format!("{canonical}{}", &spec[name.len()..])
        }
        // Crate names on the registry are case-insensitive; `-` and `_` are distinct crates.
        Manager::Cargo => {
            let name = m.package_name(spec);
            format!("{}{}", name.to_lowercase(), &spec[name.len()..])
        }
        _ => spec.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(m: Manager, spec: &str) -> Result<Packages, String> {
        let mut p = Packages::default();
        p.list_mut(m).push(spec.to_string());
        p.normalized()
    }

    #[test]
    fn accepts_each_managers_pins() {
        for (m, ok) in [
            (Manager::Apt, vec!["jq", "libc6=2.36-9+deb12u4", "g++"]),
            (Manager::Cargo, vec!["ripgrep", "ripgrep@14.1.0"]),
            (Manager::Gem, vec!["rake", "rake:13.0.6"]),
            (Manager::Go, vec!["golang.org/x/tools/cmd/goimports@v0.1.0", "example.com/hello@latest"]),
            (Manager::Npm, vec!["is-number", "is-number@7.0.0", "@types/node@20.1.0"]),
            (Manager::Pip, vec!["six", "six==1.16.0", "requests[socks]==2.31.0"]),
        ] {
            for spec in ok {
                assert!(check(m, spec).is_ok(), "{} {spec}: {:?}", m.name(), check(m, spec));
            }
        }
    }

    #[test]
    fn rejects_bad_entries_naming_the_field() {
        let p = Packages { pip: vec!["six".into(), "six===".into()], ..Default::default() };
        assert_eq!(
            p.normalized().unwrap_err(),
            "packages.pip[1]: \"six===\" is not a valid pip package; use `name` or `name==1.2.3`"
        );
        for (m, bad) in [
            (Manager::Apt, "-o=evil"),
            (Manager::Apt, "jq; rm -rf /"),
            (Manager::Cargo, "rg@"),
            (Manager::Gem, "rake:"),
            (Manager::Go, "goimports"),
            (Manager::Npm, "Is-Number"),
            (Manager::Pip, "six>=1"),
            (Manager::Pip, ""),
        ] {
            assert!(check(m, bad).is_err(), "{} {bad:?} was accepted", m.name());
        }
    }

    #[test]
    fn normalizes_sorts_and_dedups() {
        let p = Packages {
            pip: vec!["Six==1.16.0".into(), " zope.interface".into(), "six==1.16.0".into()],
            ..Default::default()
        };
        assert_eq!(p.normalized().unwrap().pip, vec!["six==1.16.0", "zope-interface"]);
        assert_eq!(Manager::Npm.package_name("@types/node@20.1.0"), "@types/node");
        assert_eq!(Manager::Pip.package_name("requests[socks]==2"), "requests");
    }
}
