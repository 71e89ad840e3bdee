//! The plugin config string: parse/print round trip and every malformed form.

use std::collections::BTreeMap;

use gismo::GISMO_KEYS;
use gismo_plugin::config::{parse_params, print_params};
use gismo_plugin::{ConfigError, PluginConfig};
use proptest::prelude::*;

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn parses_pairs_escapes_and_empty() {
    assert_eq!(parse_params("").unwrap(), BTreeMap::new());
    assert_eq!(
        parse_params("region=file:/dev/shm/g,size=1GiB,format=").unwrap(),
        map(&[
            ("region", "file:/dev/shm/g"),
            ("size", "1GiB"),
            ("format", "")
        ])
    );
    assert_eq!(
        parse_params(r"a\,b=c\=d\\,e=x=y").unwrap(),
        map(&[("a,b", r"c=d\"), ("e", "x=y")])
    );
}

#[test]
fn malformed_strings_are_typed_errors() {
    assert_eq!(
        parse_params("a=1,b"),
        Err(ConfigError::MissingEquals {
            pair: "b".into(),
            at: 4
        })
    );
    assert_eq!(parse_params("=1"), Err(ConfigError::EmptyKey { at: 0 }));
    assert_eq!(
        parse_params("a=1,,b=2"),
        Err(ConfigError::EmptyPair { at: 4 })
    );
    assert_eq!(parse_params("a=1,"), Err(ConfigError::EmptyPair { at: 4 }));
    assert_eq!(parse_params(r"a=1\"), Err(ConfigError::DanglingEscape));
    assert_eq!(
        parse_params(r"a=\n"),
        Err(ConfigError::BadEscape {
            escaped: 'n',
            at: 3
        })
    );
    assert_eq!(
        parse_params("a=1,a=2"),
        Err(ConfigError::DuplicateKey { key: "a".into() })
    );
}

#[test]
fn unknown_keys_are_refused_per_plugin() {
    let c = PluginConfig::from_strings("gismo", "", "region=memfd:x,sise=1GiB").unwrap();
    let e = c.check_keys(GISMO_KEYS).unwrap_err();
    assert!(matches!(&e, ConfigError::UnknownKey { key, .. } if key == "sise"));
    assert!(e
        .to_string()
        .contains("region,size,format,coherence,client_name"));
    PluginConfig::from_strings("gismo", "", "region=memfd:x,size=1GiB,client_name=w")
        .unwrap()
        .check_keys(GISMO_KEYS)
        .unwrap();
}

#[test]
fn from_env_reads_the_three_variables() {
    // The only test in this binary that touches the environment.
    std::env::set_var("RAY_object_store_plugin_name", "gismo");
    std::env::set_var("RAY_object_store_plugin_path", "");
    std::env::set_var("RAY_object_store_plugin_config", r"region=file:/tmp/a\,b");
    let c = PluginConfig::from_env().unwrap();
    assert_eq!(c.name, "gismo");
    assert_eq!(c.params, map(&[("region", "file:/tmp/a,b")]));
    std::env::set_var("RAY_object_store_plugin_config", "oops");
    assert!(matches!(
        PluginConfig::from_env(),
        Err(ConfigError::MissingEquals { .. })
    ));
}

proptest! {
    #[test]
    fn print_then_parse_round_trips(
        params in prop::collection::btree_map("[a-z,=\\\\ é]{1,8}", "[a-z,=\\\\ é]{0,8}", 0..6)
    ) {
        let s = print_params(&params);
        prop_assert_eq!(parse_params(&s).unwrap(), params);
    }

    #[test]
    fn parse_never_panics_and_reprints_canonically(s in "[a-c,=\\\\]{0,16}") {
        if let Ok(p) = parse_params(&s) {
            prop_assert_eq!(parse_params(&print_params(&p)).unwrap(), p);
        }
    }
}
