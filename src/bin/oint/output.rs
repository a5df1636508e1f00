//! Printing the result: pretty JSON on stdout, or into the `--out` file.

use crate::Failure;
use std::io::Write;
use std::path::Path;

/// The result as printed: JSON with 2-space indentation in the server's key order (serde_json
/// keeps it), non-ASCII as UTF-8, one trailing newline. Text that is not JSON (the library
/// never returns such) is printed as it is.
pub fn pretty(result: &str) -> String {
    let mut text = serde_json::from_str::<serde_json::Value>(result)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| result.trim_end().to_string());
    text.push('\n');
    text
}

/// Prints the result on stdout, or writes it to `out` and prints one line saying where.
pub fn emit(result: &str, out: Option<&Path>) -> Result<(), Failure> {
    let text = pretty(result);
    let Some(path) = out else {
        return print_text(&text);
    };
    std::fs::write(path, &text).map_err(|e| {
        Failure::option("--out", format!("could not write {}: {e}", path.display()))
    })?;
    let full = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    print_text(&format!(
        "Wrote {} to {}\n",
        size(text.len()),
        full.display()
    ))
}

/// `1234 bytes (1.2 KiB)`.
fn size(bytes: usize) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    let mut scaled = bytes as f64;
    let mut unit = None;
    for u in UNITS {
        if scaled < 1024.0 {
            break;
        }
        scaled /= 1024.0;
        unit = Some(u);
    }
    match unit {
        Some(u) => format!("{bytes} bytes ({scaled:.1} {u})"),
        None => format!("{bytes} bytes"),
    }
}

/// Writes to stdout; a closed stdout is an unexpected error (exit 99): nothing was printed.
pub fn print_text(text: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| Failure::Unexpected(format!("could not write to stdout: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_keeps_order_and_indents_by_two() {
        assert_eq!(
            pretty(r#"{"b":1,"a":[{}]}"#),
            "{\n  \"b\": 1,\n  \"a\": [\n    {}\n  ]\n}\n"
        );
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(12), "12 bytes");
        assert_eq!(size(1536), "1536 bytes (1.5 KiB)");
    }
}
