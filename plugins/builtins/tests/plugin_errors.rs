//! Bad plugin inputs: each is a typed error, and nothing crashes.

#[path = "support/plugin_paths.rs"]
mod plugin_paths;

use std::collections::BTreeMap;

use gismo_builtins::plugin_manager;
use gismo_plugin::interface::StatusCode;
use gismo_plugin::{ConfigError, Mode, PluginConfig, PluginError, PluginManager};

fn m() -> &'static PluginManager {
    plugin_manager()
}

fn none() -> BTreeMap<String, String> {
    BTreeMap::new()
}

#[test]
fn built_in_names() {
    // plasma (also the empty name): the runner is made from its configuration; a client needs a
    // store listening on its socket and says which socket it could not reach.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    let cfg: BTreeMap<String, String> = [
        (
            "store_socket_name".to_string(),
            sock.to_str().unwrap().to_string(),
        ),
        ("connect_timeout_ms".to_string(), "100".to_string()),
    ]
    .into();
    for name in ["", "plasma"] {
        assert!(m().create_runner(name, "", &cfg).is_ok());
        let e = m().create_client(name, "", &cfg).err().unwrap();
        assert!(
            matches!(&e, PluginError::Status(s) if s.code == StatusCode::IOError),
            "{e}"
        );
        assert!(e.to_string().contains("none.sock"), "{e}");
    }
    let e = m().create_client("vineyard", "", &none()).err().unwrap();
    assert!(matches!(&e, PluginError::UnknownPlugin(s) if s == "vineyard"));
}

#[test]
fn relative_and_missing_paths() {
    let e = m().create_client("x", "libx.so", &none()).err().unwrap();
    assert!(matches!(e, PluginError::RelativePath(_)), "{e}");
    let e = m()
        .create_runner("x", "/nonexistent/libx.so", &none())
        .err()
        .unwrap();
    assert!(matches!(e, PluginError::MissingLibrary { .. }), "{e}");
}

#[test]
fn a_file_that_is_not_a_shared_library() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("libtext.so");
    std::fs::write(&p, "not an ELF file\n").unwrap();
    let e = m()
        .create_client("x", p.to_str().unwrap(), &none())
        .err()
        .unwrap();
    assert!(matches!(e, PluginError::Load { .. }), "{e}");
}

#[test]
fn broken_c_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let build = |d: &str| plugin_paths::compile_c("bad_plugin.c", &[d], dir.path());

    let so = build("NO_SYMBOLS");
    let e = m()
        .create_client("x", so.to_str().unwrap(), &none())
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            PluginError::MissingSymbol {
                symbol: "CreateClient",
                ..
            }
        ),
        "{e}"
    );
    let e = m()
        .create_runner("x", so.to_str().unwrap(), &none())
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            PluginError::MissingSymbol {
                symbol: "CreateRunner",
                ..
            }
        ),
        "{e}"
    );

    let so = build("NULL_FACTORY");
    let e = m()
        .create_client("x", so.to_str().unwrap(), &none())
        .err()
        .unwrap();
    assert!(
        matches!(&e, PluginError::FactoryFailed { message, .. } if message == "returned null"),
        "{e}"
    );
    let e = m()
        .create_runner("x", so.to_str().unwrap(), &none())
        .err()
        .unwrap();
    assert!(matches!(e, PluginError::FactoryFailed { .. }), "{e}");

    let so = build("BAD_VERSION");
    let e = m()
        .create_client("x", so.to_str().unwrap(), &none())
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            PluginError::AbiVersion {
                found: 99,
                expected: gismo_plugin::abi::ABI_VERSION,
                ..
            }
        ),
        "{e}"
    );
    let expected = format!("version {}", gismo_plugin::abi::ABI_VERSION);
    assert!(e.to_string().contains("version 99") && e.to_string().contains(&expected));
    let e = m()
        .create_runner("x", so.to_str().unwrap(), &none())
        .err()
        .unwrap();
    assert!(
        matches!(e, PluginError::AbiVersion { found: 99, .. }),
        "{e}"
    );

    let so = build("SMALL_TABLE");
    let e = m()
        .create_client("x", so.to_str().unwrap(), &none())
        .err()
        .unwrap();
    assert!(
        matches!(e, PluginError::TableTooSmall { found: 8, .. }),
        "{e}"
    );

    // Right version and size, but every function null.
    let so = build("NULL_FUNCTIONS");
    let e = m()
        .create_client("x", so.to_str().unwrap(), &none())
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            PluginError::NullFunction {
                function: "create",
                ..
            }
        ),
        "{e}"
    );
    let e = m()
        .create_runner("x", so.to_str().unwrap(), &none())
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            PluginError::NullFunction {
                function: "start",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn malformed_config_strings() {
    for bad in ["a", "=1", "a=1,,b=2", r"a=\", r"a=\x", "a=1,a=2"] {
        assert!(
            PluginConfig::from_strings("gismo", "", bad).is_err(),
            "{bad:?} must be refused"
        );
    }
}

#[test]
fn unknown_config_keys() {
    let cfg: BTreeMap<String, String> = [("sise".to_string(), "1GiB".to_string())].into();
    let e = m().create_client("gismo", "", &cfg).err().unwrap();
    assert!(
        matches!(&e, PluginError::Config(ConfigError::UnknownKey { key, .. }) if key == "sise"),
        "{e}"
    );
    let e = m().create_runner("gismo", "", &cfg).err().unwrap();
    assert!(
        matches!(e, PluginError::Config(ConfigError::UnknownKey { .. })),
        "{e}"
    );
    // The same through libgismo.so: its CreateClient refuses and says why.
    let lib = plugin_paths::libgismo();
    let e = m()
        .create_client("gismo", lib.to_str().unwrap(), &cfg)
        .err()
        .unwrap();
    assert!(
        matches!(&e, PluginError::FactoryFailed { message, .. } if message.contains("unknown key \"sise\"")),
        "{e}"
    );
}

#[test]
fn bad_region_is_a_status_error() {
    let cfg: BTreeMap<String, String> =
        [("region".to_string(), "daxx:/dev/dax0.0".to_string())].into();
    let e = m().create_client("gismo", "", &cfg).err().unwrap();
    assert!(
        matches!(&e, PluginError::Status(s) if s.code == StatusCode::Invalid),
        "{e}"
    );
}

#[test]
fn strict_fails_with_the_cause_and_fallback_starts_plasma() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("fallback.sock");
    let config = format!(
        "store_socket_name={},object_store_memory=16MiB",
        sock.display()
    );
    let cfg = PluginConfig::from_strings("mine", "/nonexistent/libmine.so", &config).unwrap();
    let e = m()
        .create_client_with_mode(&cfg, Mode::Strict)
        .err()
        .unwrap();
    assert!(matches!(e, PluginError::MissingLibrary { .. }), "{e}");
    let e = m()
        .create_runner_with_mode(&cfg, Mode::Strict)
        .err()
        .unwrap();
    assert!(matches!(e, PluginError::MissingLibrary { .. }), "{e}");
    // Fallback: plasma, with the plasma keys of the configuration.
    let runner = m().create_runner_with_mode(&cfg, Mode::Fallback).unwrap();
    runner
        .start(&none(), gismo_plugin::interface::RunnerCallbacks::none())
        .unwrap();
    assert!(runner.total_memory_size() >= 16 << 20);
    let client = m().create_client_with_mode(&cfg, Mode::Fallback).unwrap();
    assert!(!client.is_global(), "the fallback is node-local plasma");
    let id = gismo_core::store::ObjectId::random();
    let mut b = client
        .create(
            &id,
            &Default::default(),
            false,
            5,
            b"",
            gismo_core::store::ObjectSource::CreatedByWorker,
        )
        .unwrap();
    b.as_mut_slice().copy_from_slice(b"plasm");
    client.seal(&id).unwrap();
    drop(b);
    assert_eq!(
        client.get(&[id], 0).unwrap()[0].as_ref().unwrap().data(),
        b"plasm"
    );
    runner.stop();
}
