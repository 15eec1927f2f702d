//! The example pipeline's raw table (without its derived outputs), the decoder built for it once.

use std::sync::OnceLock;

use floe_core::Pipeline;
use floe_core::RecordDecoder;
use floe_core::TableLayout;

pub struct Fixture {
    pub pipeline: Pipeline,
    pub decoder: RecordDecoder,
}

pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let text = include_str!("../../examples/pipeline.toml");
        let raw = text.split("# ---- Derived outputs").next().expect("split yields one part");
        let pipeline = Pipeline::parse(raw, "examples/pipeline.toml").expect("example pipeline parses");
        let layout = TableLayout::target(&pipeline, "file:///fuzz").expect("layout");
        let decoder = RecordDecoder::new(&pipeline, &layout).expect("decoder");
        Fixture { pipeline, decoder }
    })
}
