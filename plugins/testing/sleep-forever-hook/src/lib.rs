//! Test-only: a hook that blocks in a WASI sleep for ever. Its `timeout` must still hold.
use mtcd_plugin::{Context, Hook, Phase};

struct Sleeper;

impl Hook for Sleeper {
    fn run(_phase: Phase, _ctx: &Context) -> Result<(), String> {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

mtcd_plugin::export_hook!(Sleeper);
