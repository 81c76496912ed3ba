//! `berth-wit-future`: a storage plugin built against a `berth:plugin` version this Berth does
//! not load (`0.2.0`), for the test that the host refuses it and names both versions. Its
//! interfaces are deliberately minimal: a host that checked only names, not versions, would
//! fail later and less clearly, at link time.

wit_bindgen::generate!({
    inline: "
        package berth:plugin@0.2.0;

        interface lifecycle {
            init: func(config: list<tuple<string, string>>) -> result<_, string>;
        }

        interface storage-driver {
            ping: func() -> u32;
        }

        world storage-driver-plugin {
            export lifecycle;
            export storage-driver;
        }
    ",
    world: "storage-driver-plugin",
});

struct Future;

impl exports::berth::plugin::lifecycle::Guest for Future {
    fn init(_config: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }
}

impl exports::berth::plugin::storage_driver::Guest for Future {
    fn ping() -> u32 {
        2
    }
}

export!(Future);
