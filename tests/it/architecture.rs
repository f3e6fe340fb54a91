//! The rooms of `src/` use only the rooms docs/architecture.md allows: its
//! `| room | may use |` table is read as written, and every `crate::<room>`
//! path outside comments (a `use` line, a grouped `use crate::{...}`, an
//! inline path, a path named in an attribute's string) must be an arrow the
//! table draws. Every room in `src/` needs a row, and every row a room.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[test]
fn rooms_use_only_the_rooms_the_architecture_allows() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).expect("the doc");
    let allowed = may_use(&doc);
    assert!(
        !allowed.is_empty(),
        "no `| room | may use |` table in docs/architecture.md"
    );
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let rooms: BTreeSet<String> = files.iter().filter_map(|file| room(&src, file)).collect();

    let mut problems = Vec::new();
    for room in rooms.iter().filter(|room| !allowed.contains_key(*room)) {
        problems.push(format!(
            "src/ has the room `{room}`, which the table has no row for"
        ));
    }
    for room in allowed.keys().filter(|room| !rooms.contains(*room)) {
        problems.push(format!(
            "the table has a row for `{room}`, which src/ does not have"
        ));
    }
    for file in &files {
        // src/lib.rs and src/main.rs wire every room together.
        let Some(from) = room(&src, file) else {
            continue;
        };
        let source = std::fs::read_to_string(file).expect("a source file");
        for (line, to) in crate_paths(&without_comments(&source)) {
            if to != from && !allowed.get(&from).is_some_and(|may| may.contains(&to)) {
                let path = file.strip_prefix(root).unwrap().display();
                problems.push(format!(
                    "{path}:{line}: `{from}` -> `{to}` is not in the table"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "docs/architecture.md#arrows:\n{}",
        problems.join("\n")
    );
}

/// Each row of the table: the room, and the rooms in backticks it may use
/// (none when the cell says `nothing`).
fn may_use(doc: &str) -> BTreeMap<String, BTreeSet<String>> {
    let ticked = |cell: &str| -> Vec<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(String::from)
            .collect()
    };
    doc.lines()
        .skip_while(|line| !line.starts_with("| room | may use |"))
        .skip(2)
        .map_while(|line| line.strip_prefix('|'))
        .filter_map(|row| {
            let (room, uses) = row.split_once('|')?;
            Some((ticked(room).pop()?, ticked(uses).into_iter().collect()))
        })
        .collect()
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

/// The folder under src/, or the stem of a file directly in it; none for
/// lib.rs and main.rs.
fn room(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let mut parts = relative.iter().map(|part| part.to_string_lossy());
    let first = parts.next()?;
    match parts.next() {
        Some(_) => Some(first.into_owned()),
        None => {
            let stem = first.strip_suffix(".rs")?;
            (stem != "lib" && stem != "main").then(|| stem.to_string())
        }
    }
}

/// Every room a `crate::` path names, with its line: `crate::room::...` and
/// each first name in `crate::{room::..., other, ...}`.
fn crate_paths(code: &str) -> Vec<(usize, String)> {
    let name = |text: &str| -> String {
        text.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        if code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let line = code[..at].matches('\n').count() + 1;
        let rest = &code[at + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            found.push((line, name(rest)));
            continue;
        };
        // The names at the group's own level, each after `{` or `,`.
        let (mut depth, mut starts) = (1, vec![group]);
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 1 => break,
                '}' => depth -= 1,
                ',' if depth == 1 => starts.push(&group[i + 1..]),
                _ => {}
            }
        }
        found.extend(
            starts
                .into_iter()
                .map(|start| name(start.trim_start()))
                .filter(|room| !room.is_empty() && room != "self")
                .map(|room| (line, room)),
        );
    }
    found
}

/// The source with its comments blanked and its lines kept. String and char
/// literals are skipped over (a `//` in a URL is no comment), not blanked:
/// attributes name paths in strings.
fn without_comments(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let at = |i: usize| chars.get(i).copied();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < chars.len() {
        let start = i;
        match (chars[i], at(i + 1)) {
            ('/', Some('/')) => {
                while at(i).is_some_and(|c| c != '\n') {
                    i += 1;
                }
                continue;
            }
            ('/', Some('*')) => {
                let mut depth = 0;
                while i < chars.len() {
                    match (chars[i], at(i + 1)) {
                        ('/', Some('*')) => (depth, i) = (depth + 1, i + 2),
                        ('*', Some('/')) => (depth, i) = (depth - 1, i + 2),
                        (c, _) => {
                            if c == '\n' {
                                out.push(c);
                            }
                            i += 1;
                        }
                    }
                    if depth == 0 {
                        break;
                    }
                }
                continue;
            }
            // r"...", r#"..."#, br"...": no escapes, closed by the same hashes.
            ('r', Some('#' | '"')) if raw_prefix(&chars[..i]) => {
                let hashes = chars[i + 1..].iter().take_while(|c| **c == '#').count();
                i += 1 + hashes;
                if at(i) == Some('"') {
                    let close: Vec<char> = "\"".chars().chain("#".repeat(hashes).chars()).collect();
                    i += 1;
                    while i < chars.len() && !chars[i..].starts_with(&close) {
                        i += 1;
                    }
                    i += close.len();
                }
            }
            ('"', _) => {
                i += 1;
                while at(i).is_some_and(|c| c != '"') {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            // Char literals ('"', '\''), not lifetimes ('a).
            ('\'', Some('\\')) => {
                i += 3;
                while at(i).is_some_and(|c| c != '\'') {
                    i += 1;
                }
                i += 1;
            }
            ('\'', Some(_)) if at(i + 2) == Some('\'') => i += 3,
            _ => i += 1,
        }
        out.extend(&chars[start..i.min(chars.len())]);
    }
    out
}

/// Whether an `r` here starts a raw string: it begins a token, or follows a lone `b`.
fn raw_prefix(before: &[char]) -> bool {
    let word = before
        .iter()
        .rev()
        .take_while(|c| c.is_alphanumeric() || **c == '_');
    match word.count() {
        0 => true,
        1 => before.last() == Some(&'b'),
        _ => false,
    }
}
