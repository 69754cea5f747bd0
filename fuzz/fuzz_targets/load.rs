//! Arbitrary bytes as a configuration: `tollgate::load` must never panic, and a configuration
//! that compiled must have no error diagnostics, a failed load is always explained by one, and
//! the config is handed back exactly when it compiled.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let loaded = tollgate::load(bytes);
    if loaded.compiled.is_some() {
        assert!(
            !loaded.diagnostics.has_errors(),
            "compiled despite errors: {:#?}",
            loaded.diagnostics.errors().collect::<Vec<_>>()
        );
    } else {
        assert!(
            loaded.diagnostics.has_errors(),
            "refused without an error: {:#?}",
            loaded.diagnostics.iter().collect::<Vec<_>>()
        );
    }
    assert_eq!(loaded.config.is_some(), loaded.compiled.is_some());
});
