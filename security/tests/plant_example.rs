//! The example policy shipped in examples/plant.toml (and in docs/SECURITY.md) compiles.

use std::path::Path;

use converge_security::check_file;

#[test]
fn plant_example_compiles() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/plant.toml");
    let policy = match check_file(&path) {
        Ok(p) => p,
        Err(diags) => {
            let text: Vec<String> = diags.iter().map(ToString::to_string).collect();
            panic!("example policy does not compile:\n{}", text.join("\n"));
        }
    };
    let zones: Vec<&str> = policy.zones().iter().map(|z| z.id()).collect();
    assert_eq!(zones, ["cell-a", "cell-b", "scada", "dmz", "enterprise"]);
    assert_eq!(policy.conduits().len(), 8);
    assert_eq!(policy.profiles().len(), 4);
}

#[test]
fn docs_carry_the_same_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("examples/plant.toml")).unwrap();
    let docs = std::fs::read_to_string(root.join("../docs/SECURITY.md")).unwrap();
    let start = docs
        .find("```toml\n# Converge security policy for plant 1")
        .expect("docs/SECURITY.md has the plant example")
        + "```toml\n".len();
    let len = docs[start..].find("```").expect("closing fence");
    assert_eq!(
        &docs[start..start + len],
        example,
        "docs/SECURITY.md and examples/plant.toml differ"
    );
}
