//! The committed C header is what cbindgen generates from the sources today.

use std::path::Path;

#[test]
fn committed_header_is_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(root)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let path = root.join("include/opi_openai.h");
    if std::env::var_os("OPI_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/opi_openai.h is stale: run `OPI_BLESS=1 cargo test --test header` and commit it"
    );
}

#[test]
fn header_declares_only_the_c_api() {
    let header =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/opi_openai.h"))
            .unwrap();
    let mut functions: Vec<&str> = header
        .lines()
        .filter(|l| {
            !l.starts_with("//")
                && !l.starts_with(' ')
                && !l.starts_with("typedef")
                && l.contains('(')
        })
        .filter_map(|l| l.split('(').next()?.split([' ', '*']).next_back())
        .collect();
    functions.sort();
    assert_eq!(
        functions,
        [
            "opi_free_string",
            "opi_openai_get_image_description_structure",
            "opi_openai_get_images",
            "opi_openai_get_images_batch",
            "opi_openai_get_images_ex",
            "opi_openai_get_images_stream",
            "opi_version"
        ]
    );
    let typedefs: Vec<&str> = header
        .lines()
        .filter(|l| l.starts_with("typedef"))
        .collect();
    assert_eq!(
        typedefs,
        ["typedef int (*opi_event_fn)(void *user_data,"],
        "the one type: the stream's event callback"
    );
    assert!(
        !header
            .replace("#define OPI_OPENAI_H", "")
            .contains("#define"),
        "no macros leak into the header (the add-in's variant codes once did)"
    );
}
