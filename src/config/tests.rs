use std::collections::HashMap;
use std::path::Path;

use super::*;

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

const MINIMAL: &str =
    "name: shop\nsource:\n  connector.class: io.debezium.connector.postgresql.PostgresConnector\n";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("c.yaml"), text, &env_of(&[]))
}

#[test]
fn interpolates_set_unset_empty_and_literal_dollar() {
    let env = env_of(&[("A", "x"), ("EMPTY", "")]);
    assert_eq!(interpolate("${A}-${B:-dflt}", &env).unwrap(), "x-dflt");
    assert_eq!(interpolate("${EMPTY:-dflt}", &env).unwrap(), "dflt");
    assert_eq!(interpolate("${EMPTY}", &env).unwrap(), "");
    assert_eq!(interpolate("${B:-}", &env).unwrap(), "");
    assert_eq!(interpolate("cost $$5 $x", &env).unwrap(), "cost $5 $x");
    assert_eq!(interpolate("${A:-a:-b}", &env).unwrap(), "x");
}

#[test]
fn interpolation_errors_name_the_variable_or_line() {
    let env = env_of(&[]);
    let e = interpolate("a: ${MISSING}", &env).unwrap_err().0;
    assert!(e.contains("MISSING") && e.contains(".env"), "{e}");
    let e = interpolate("a: 1\nb: ${OPEN", &env).unwrap_err().0;
    assert!(e.contains("line 2"), "{e}");
    let e = interpolate("${not valid}", &env).unwrap_err().0;
    assert!(e.contains("not a variable"), "{e}");
}

#[test]
fn defaults_fill_what_is_left_out() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.journal.dir, Path::new("data/journal"));
    assert_eq!(c.journal.segment_max_bytes, 64 * 1024 * 1024);
    assert_eq!(c.engine.lib_dir, Path::new("debezium/lib"));
    assert_eq!(c.engine.jvm_options, vec!["-Xmx1g"]);
    assert_eq!(c.audit.url, "file://data/audit");
    assert!(c.is_postgres());
}

#[test]
fn unknown_keys_are_named_with_their_path() {
    let e = parse(&format!("{MINIMAL}journal:\n  segment_max_byte: 10\n")).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains(
            "`journal.segment_max_byte` unknown field `segment_max_byte`, expected one of"
        ),
        "{msg}"
    );

    let e = parse(&format!("{MINIMAL}colour: red\n")).unwrap_err();
    assert!(e.to_string().contains("colour"), "{e}");
}

#[test]
fn bad_values_are_named_with_their_path() {
    let e = parse(&format!("{MINIMAL}journal:\n  segment_max_bytes: lots\n")).unwrap_err();
    assert!(
        e.to_string()
            .ends_with("`journal.segment_max_bytes` \"lots\" is not a whole number (invalid digit found in string)"),
        "{e}"
    );

    // An optional number says the same.
    let e = parse(&format!("{MINIMAL}audit:\n  retain_days: soon\n")).unwrap_err();
    assert!(
        e.to_string().ends_with(
            "`audit.retain_days` \"soon\" is not a whole number (invalid digit found in string)"
        ),
        "{e}"
    );

    let e = parse(&format!("{MINIMAL}journal:\n  segment_max_bytes: 10\n")).unwrap_err();
    assert!(
        e.to_string().contains("`journal.segment_max_bytes` is 10"),
        "{e}"
    );

    let e = parse("name: 'bad name'\nsource:\n  connector.class: x\n").unwrap_err();
    assert!(e.to_string().contains("`name`"), "{e}");

    let e = parse("name: shop\nsource: {}\n").unwrap_err();
    assert!(e.to_string().contains("source.connector.class"), "{e}");

    let e = parse(&format!("{MINIMAL}audit:\n  url: ftp://x\n")).unwrap_err();
    assert!(e.to_string().contains("audit.url"), "{e}");

    let e = parse(&format!(
        "{MINIMAL}target:\n  url: mysql://a@b/c\n  batch_rows: 0\n"
    ))
    .unwrap_err();
    assert!(e.to_string().contains("target.batch_rows"), "{e}");
}

#[test]
fn secrets_never_print() {
    let text = format!(
        "{MINIMAL}  database.password: hunter2\ntarget:\n  url: mysql://sync:hunter2@h:1/t\n"
    );
    let c = parse(&text).unwrap();
    let shown = format!("{c:?} {:?}", c.redacted_source());
    assert!(!shown.contains("hunter2"), "{shown}");
    assert_eq!(
        c.target.as_ref().unwrap().url.expose(),
        "mysql://sync:hunter2@h:1/t"
    );
    assert_eq!(c.redacted_source()["database.password"], "***");
}

#[test]
fn scalar_source_values_become_strings() {
    let text = format!("{MINIMAL}  database.port: 15432\n  include.schema.changes: false\n");
    let c = parse(&text).unwrap();
    assert_eq!(c.source_prop("database.port").as_deref(), Some("15432"));
    assert_eq!(
        c.source_prop("include.schema.changes").as_deref(),
        Some("false")
    );
}

#[test]
fn values_from_the_environment_are_taken_verbatim() {
    let env = env_of(&[
        ("PW", "p#ss: w0rd"),
        ("ZEROS", "0012"),
        ("ROWS", "250"),
        ("YES", "false"),
    ]);
    let text = format!(
        "{MINIMAL}  database.password: ${{PW}}\n  database.dbname: ${{ZEROS}}\ntarget:\n  url: mysql://u:${{PW}}@h/db\n  batch_rows: ${{ROWS}}\n  load_data: ${{YES}}\n"
    );
    let c = Config::parse(Path::new("c.yaml"), &text, &env).unwrap();
    assert_eq!(c.source_prop("database.password").unwrap(), "p#ss: w0rd");
    assert_eq!(c.source_prop("database.dbname").unwrap(), "0012");
    let t = c.target.unwrap();
    assert_eq!(t.url.expose(), "mysql://u:p#ss: w0rd@h/db");
    assert_eq!((t.batch_rows, t.load_data), (250, false));
    let e = Config::parse(
        Path::new("c.yaml"),
        &format!("{MINIMAL}  database.password: ${{NOPE}}\n"),
        &env,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("`source.database.password`") && e.contains("NOPE"),
        "names the key and the variable: {e}"
    );
}
