//! The `capecontrol` CLI: exact output and exit status.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_capecontrol"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run capecontrol")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A fresh scratch directory for one test, removed when dropped (the test passed or not).
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(test: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("capecontrol-cli-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    Scratch(dir)
}

const VALID: &str = "examples/manifests/finance-agent.json";
const TYPOS: &str = "examples/manifests/invalid/typos.json";

const TYPOS_HUMAN: &str = "\
examples/manifests/invalid/typos.json: /version: is not valid SemVer 2.0.0 (unexpected character 'v' while parsing major version number)
examples/manifests/invalid/typos.json: /descripton: unknown field
examples/manifests/invalid/typos.json: /category: must be one of \"ai-assisted\", \"domain-specific\", \"middleware\", \"utility\"
examples/manifests/invalid/typos.json: /tools/2: is a duplicate of /tools/0
examples/manifests/invalid/typos.json: /config/timeout: must be at most 300
examples/manifests/invalid/typos.json: /config/memory_limit: must be at least 6 MB
examples/manifests/invalid/typos.json: /permisions: unknown field
examples/manifests/invalid/typos.json: /triggers/schedules/0: must be a 5-field cron expression (minute hour day-of-month month day-of-week), not 6 fields
examples/manifests/invalid/typos.json: /description: is required
";

#[test]
fn valid_files_print_nothing_and_exit_0() {
    let o = run(&[
        "manifest",
        "validate",
        VALID,
        "examples/manifests/blueprint.json",
        "examples/manifests/cape-ai-guide.json",
        "examples/manifests/energy-agent.json",
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "");
}

#[test]
fn invalid_files_print_one_line_per_problem_and_exit_1() {
    let o = run(&["manifest", "validate", VALID, TYPOS]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), TYPOS_HUMAN);
}

#[test]
fn json_output_is_one_object_per_file_per_line() {
    let o = run(&["manifest", "validate", "--json", VALID, TYPOS]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0],
        r#"{"file":"examples/manifests/finance-agent.json","valid":true,"errors":[]}"#
    );
    let second: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(second["file"], TYPOS);
    assert_eq!(second["valid"], false);
    assert_eq!(second["errors"].as_array().map(Vec::len), Some(9));
    assert_eq!(
        second["errors"][4],
        serde_json::json!({"pointer": "/config/timeout", "message": "must be at most 300"})
    );
    assert!(lines[1].starts_with(
        r#"{"file":"examples/manifests/invalid/typos.json","valid":false,"errors":[{"pointer":"/version","message":"is not valid SemVer 2.0.0"#
    ));
    // --json may come after the files too.
    let o = run(&["manifest", "validate", VALID, "--json"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o),
        "{\"file\":\"examples/manifests/finance-agent.json\",\"valid\":true,\"errors\":[]}\n"
    );
}

#[test]
fn a_file_that_is_not_json_is_invalid_with_line_and_column() {
    let dir = scratch("not-json");
    let file = dir.join("broken.json");
    std::fs::write(&file, "{\n  \"name\": \"x\",\n  oops\n}\n").unwrap();
    let f = file.to_str().unwrap();
    let o = run(&["manifest", "validate", f]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stdout(&o),
        format!("{f}: : is not valid JSON: key must be a string at line 3 column 3\n")
    );
    let o = run(&["manifest", "validate", "--json", f]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim_end()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"file": f, "valid": false, "errors": [
            {"pointer": "", "message": "is not valid JSON: key must be a string at line 3 column 3"}]})
    );
}

#[test]
fn too_large_and_too_deep_files_are_invalid() {
    let dir = scratch("limits");
    let big = dir.join("big.json");
    std::fs::write(&big, vec![b' '; (1 << 20) + 1]).unwrap();
    let deep = dir.join("deep.json");
    std::fs::write(&deep, format!("{}{}", "[".repeat(129), "]".repeat(129))).unwrap();
    let (b, d) = (big.to_str().unwrap(), deep.to_str().unwrap());
    let o = run(&["manifest", "validate", b, d]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stdout(&o),
        format!(
            "{b}: : is larger than 1 MiB (1048577 bytes; at most 1048576 are accepted)\n\
             {d}: : is nested deeper than 128 levels\n"
        )
    );
}

#[test]
fn unreadable_files_exit_2_after_reporting_the_others() {
    let o = run(&["manifest", "validate", "no/such/file.json", TYPOS]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stdout(&o), TYPOS_HUMAN);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.starts_with("capecontrol: cannot read no/such/file.json: "),
        "{stderr}"
    );
    let o = run(&["manifest", "validate", "examples"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stdout(&o), "");
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    for args in [
        &[][..],
        &["manifest"],
        &["manifest", "validate"],
        &["manifest", "validate", "--yaml", VALID],
        &["manifest", "frobnicate"],
        &["bogus"],
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert_eq!(stdout(&o), "", "{args:?}");
    }
    for args in [
        &["--help"][..],
        &["manifest", "--help"],
        &["manifest", "validate", "--help"],
        &["help", "manifest"],
        &["--version"],
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}");
        assert!(!o.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn schema_prints_the_checked_in_schema() {
    let o = run(&["manifest", "schema"]);
    assert_eq!(o.status.code(), Some(0));
    let checked_in = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas/manifest.schema.json"),
    )
    .unwrap();
    assert_eq!(stdout(&o), checked_in);
    let schema: serde_json::Value = serde_json::from_str(&checked_in).unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
}
