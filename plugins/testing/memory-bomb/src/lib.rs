//! Test-only: allocates until memory runs out. The host must stop it at its memory cap.
use mtcd_plugin::{Context, Outcome, Transform, Value};

struct Bomb;

impl Transform for Bomb {
    fn transform(_object: Value, _ctx: &Context) -> Result<Outcome, String> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            let chunk = vec![1u8; 1 << 20];
            hoard.push(std::hint::black_box(chunk));
        }
    }
}

mtcd_plugin::export_transformer!(Bomb);
