//! Local package sources for build tests of gem and go: RubyGems and the Go
//! module proxy are not reachable from this machine, so the tests serve a gem
//! source and a module proxy of their own from a test network namespace,
//! opened to builds as an operator would open a registry (`--package-registry`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::net::TestInternet;
use crate::{sh_ok, Client, Daemon};

const HOST: &str = "registry.test";
const URL: &str = "http://registry.test:8000";

/// A gem source (filled by [`LocalSources::publish_gem`]) and a Go module
/// proxy holding `example.com/hello@v1.0.0`, both at [`URL`].
pub struct LocalSources {
    pub inet: TestInternet,
    dir: PathBuf,
}

impl LocalSources {
    pub fn start() -> Self {
        let mut inet = TestInternet::start(&[HOST]);
        let dir = inet.dir().join("registry");
        std::fs::create_dir_all(dir.join("gems")).unwrap();
        write_go_proxy(&dir.join("goproxy"));
        inet.serve_dir(HOST, 8000, &dir);
        std::fs::write(dir.join("gemrc"), format!(":sources:\n- {URL}/gems/\n")).unwrap();
        Self { inet, dir }
    }

    /// A daemon (no warm pool) whose builds reach the real registries and
    /// these sources, with gem and go pointed at them.
    pub fn daemon(&self, image: PathBuf) -> Daemon {
        let mut args = vec!["--warm-sandboxes".into(), "0".into(), "--package-registry".into(), URL.into()];
        args.extend(self.inet.daemon_args());
        Daemon::start_for_builds(
            image,
            args,
            None,
            vec![
                ("GOPROXY".into(), format!("{URL}/goproxy")),
                ("GOSUMDB".into(), "off".into()),
                ("GEMRC".into(), self.dir.join("gemrc").to_string_lossy().into()),
            ],
        )
    }

    /// Builds the gem `paddock-hello` 0.1.0 (an executable printing "hello
    /// from a local gem") with real RubyGems in session `id`, which must have
    /// ruby, and publishes it with its index in the gem source.
    pub async fn publish_gem(&self, client: &mut Client, id: &str) {
        let tarball = sh_ok(client, id, GEM_SOURCE).await;
        let tar = Command::new("sh")
            .arg("-c")
            .arg(format!("base64 -d | tar -C {} -xf -", self.dir.join("gems").display()))
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        tar.stdin.as_ref().unwrap().write_all(tarball.trim().as_bytes()).unwrap();
        assert!(tar.wait_with_output().unwrap().status.success(), "unpacking the gem source");
    }
}

const GEM_SOURCE: &str = r#"set -e
mkdir -p /tmp/g/bin /tmp/repo/gems && cd /tmp/g
printf '#!/usr/bin/env ruby\nputs "hello from a local gem"\n' > bin/paddock-hello
cat > paddock-hello.gemspec <<'SPEC'
Gem::Specification.new do |s|
  s.name = "paddock-hello"
  s.version = "0.1.0"
  s.summary = "test gem"
  s.authors = ["paddock"]
  s.files = ["bin/paddock-hello"]
  s.executables = ["paddock-hello"]
  s.license = "MIT"
end
SPEC
gem build -q paddock-hello.gemspec >/dev/null
cp paddock-hello-0.1.0.gem /tmp/repo/gems/
gem generate_index -q -d /tmp/repo >/dev/null
tar -C /tmp/repo -cf - . | base64 -w0"#;

/// A Go module proxy (GOPROXY protocol: list, info, mod, zip) holding
/// example.com/hello v1.0.0, a main package.
fn write_go_proxy(root: &Path) {
    let v = root.join("example.com/hello/@v");
    std::fs::create_dir_all(&v).unwrap();
    let go_mod = "module example.com/hello\n\ngo 1.19\n";
    std::fs::write(v.join("list"), "v1.0.0\n").unwrap();
    std::fs::write(v.join("v1.0.0.info"), "{\"Version\":\"v1.0.0\",\"Time\":\"2024-01-01T00:00:00Z\"}")
        .unwrap();
    std::fs::write(v.join("v1.0.0.mod"), go_mod).unwrap();
    let main =
        "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello from a local go module\") }\n";
    let script = format!(
        "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1], 'w')\nz.writestr('example.com/hello@v1.0.0/go.mod', {go_mod:?})\nz.writestr('example.com/hello@v1.0.0/main.go', {main:?})\nz.close()\n"
    );
    let st = Command::new("python3").args(["-c", &script]).arg(v.join("v1.0.0.zip")).status().unwrap();
    assert!(st.success(), "writing the Go module's zip");
}
