//! Source-tree rules that the compiler does not check, run as a test
//! (rust-analyzer's `tidy` style): every `unsafe` block or impl carries a
//! `// SAFETY:` comment, every member inherits the workspace lints, and no
//! `dbg!`, `todo!` or `unimplemented!` is left in the code.

use std::path::{Path, PathBuf};

use crate::cmd::root;

/// Rust files under the workspace's source folders, this file excluded
/// (it names the patterns it looks for).
fn rust_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["crates", "xtask", "tests", "benches", "fuzz"] {
        walk(&root().join(dir), &mut out);
    }
    out.retain(|p| !p.ends_with("xtask/src/tidy.rs"));
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "target") {
                walk(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Whether `needle` occurs in `line` outside a string literal and before any
/// `//` comment (a line-level approximation that fits this code base).
fn code_contains(line: &str, needle: &str) -> bool {
    let code = line.split("//").next().unwrap_or("");
    let Some(at) = code.find(needle) else {
        return false;
    };
    code[..at].matches('"').count() % 2 == 0
}

/// Line numbers (1-based) of `unsafe` blocks and impls with no `SAFETY:`
/// comment on the line or in the comment lines right above it.
fn undocumented_unsafe(src: &str) -> Vec<usize> {
    let lines: Vec<&str> = src.lines().collect();
    let mut bad = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !(code_contains(line, "unsafe {") || code_contains(line, "unsafe impl")) {
            continue;
        }
        if line.contains("SAFETY:") {
            continue;
        }
        let mut documented = false;
        for above in lines[..i].iter().rev() {
            let t = above.trim_start();
            if t.starts_with("//") || t.starts_with("#[") {
                if t.contains("SAFETY:") {
                    documented = true;
                    break;
                }
            } else {
                break;
            }
        }
        if !documented {
            bad.push(i + 1);
        }
    }
    bad
}

fn forbidden_macros(src: &str) -> Vec<(usize, &'static str)> {
    let mut bad = Vec::new();
    for (i, line) in src.lines().enumerate() {
        for mac in ["dbg!(", "todo!(", "unimplemented!("] {
            if code_contains(line, mac) {
                bad.push((i + 1, mac));
            }
        }
    }
    bad
}

/// Whether a manifest has `[lints]` with `workspace = true`.
fn inherits_lints(manifest: &str) -> bool {
    let mut in_lints = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_lints = line == "[lints]";
        } else if in_lints && line.replace(' ', "") == "workspace=true" {
            return true;
        }
    }
    false
}

fn members() -> Vec<String> {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).expect("root manifest");
    let start = manifest.find("members = [").expect("members list");
    let end = start + manifest[start..].find(']').expect("end of members");
    manifest[start..end]
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn unsafe_blocks_have_safety_comments() {
    let mut problems = Vec::new();
    for f in rust_files() {
        let src = std::fs::read_to_string(&f).unwrap();
        for line in undocumented_unsafe(&src) {
            problems.push(format!(
                "{}:{line}: unsafe without a // SAFETY: comment",
                f.display()
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn no_debugging_or_stub_macros() {
    let mut problems = Vec::new();
    for f in rust_files() {
        let src = std::fs::read_to_string(&f).unwrap();
        for (line, mac) in forbidden_macros(&src) {
            problems.push(format!("{}:{line}: {mac}", f.display()));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn every_member_inherits_workspace_lints() {
    let members = members();
    assert!(members.len() >= 5, "members: {members:?}");
    let missing: Vec<_> = members
        .iter()
        .filter(|m| {
            let manifest = std::fs::read_to_string(root().join(m).join("Cargo.toml")).unwrap();
            !inherits_lints(&manifest)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "members without `[lints] workspace = true`: {missing:?}"
    );
}

#[test]
fn the_rules_catch_what_they_should() {
    let bare = "fn f() {\n    let x = 1;\n    unsafe { g() }\n}\n";
    assert_eq!(undocumented_unsafe(bare), [3]);
    let documented = "fn f() {\n    // SAFETY: g has no preconditions.\n    unsafe { g() }\n}\n";
    assert!(undocumented_unsafe(documented).is_empty());
    let far = "// SAFETY: too far away\nlet y = 2;\nunsafe impl Send for X {}\n";
    assert_eq!(undocumented_unsafe(far), [3]);
    assert!(undocumented_unsafe("let s = \"unsafe { in a string }\";").is_empty());
    assert_eq!(
        forbidden_macros("let a = dbg!(1);\n// dbg!(in a comment)\n").len(),
        1
    );
    assert_eq!(forbidden_macros("todo!()").len(), 1);
    assert!(inherits_lints(
        "[package]\nname = \"x\"\n\n[lints]\nworkspace = true\n"
    ));
    assert!(!inherits_lints(
        "[package]\nworkspace = true\n[lints.rust]\n"
    ));
}
