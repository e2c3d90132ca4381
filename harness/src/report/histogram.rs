//! Histograms in `report.json`: hdrhistogram's V2 format, deflate-compressed, then standard
//! base64 (with padding). This is the format of HdrHistogram's `encodeIntoCompressedByteBuffer`
//! in every language, so other tools can read it too.

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};

/// A histogram as it is stored in `report.json`.
pub fn encode(h: &Histogram<u64>) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .map_err(|e| anyhow::anyhow!("serializing a histogram: {e:?}"))?;
    Ok(STANDARD.encode(bytes))
}

/// A histogram from `report.json`.
pub fn decode(text: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = STANDARD
        .decode(text.trim())
        .context("a histogram is not valid base64")?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| anyhow::anyhow!("a histogram does not decode (V2+deflate expected): {e:?}"))
}

/// Several stored histograms merged into one (e.g. the same endpoint over several runs).
pub fn merge<'a>(texts: impl IntoIterator<Item = &'a str>) -> anyhow::Result<Histogram<u64>> {
    let mut merged: Option<Histogram<u64>> = None;
    for text in texts {
        let h = decode(text)?;
        match &mut merged {
            None => merged = Some(h),
            Some(m) => m
                .add(&h)
                .map_err(|e| anyhow::anyhow!("merging histograms: {e:?}"))?,
        }
    }
    merged.context("no histogram to merge")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_round_trip_and_merge() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for v in [1, 10, 100, 1_000, 1_000_000] {
            h.record(v).unwrap();
        }
        let text = encode(&h).unwrap();
        let back = decode(&text).unwrap();
        assert_eq!(back.len(), 5);
        assert_eq!(back.max(), h.max());
        assert_eq!(back.value_at_quantile(0.5), h.value_at_quantile(0.5));
        let merged = merge([text.as_str(), text.as_str()]).unwrap();
        assert_eq!(merged.len(), 10);
        assert!(decode("not base64!").is_err());
    }
}
