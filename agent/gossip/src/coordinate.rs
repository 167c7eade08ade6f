//! Vivaldi network coordinates as Serf computes them (8 dimensions plus a
//! height, error and adjustment), carried in memberlist ack payloads as
//! `[1] + msgpack(Coordinate)`.

use crate::msgpack::{decode_value, DecodeError, Value, Writer};
use std::collections::HashMap;
use std::time::Duration;

const DIM: usize = 8;
const ERROR_MAX: f64 = 1.5;
const CE: f64 = 0.25;
const CC: f64 = 0.25;
const WINDOW: usize = 20;
const HEIGHT_MIN: f64 = 10.0e-6;
const FILTER: usize = 3;
const RHO: f64 = 150.0;
const ZERO: f64 = 1.0e-6;
/// Version byte Serf puts before the coordinate in ack payloads.
pub const PING_VERSION: u8 = 1;
/// Most nodes whose latency samples we keep.
const MAX_FILTER_NODES: usize = 4096;

/// A Vivaldi coordinate.
#[derive(Debug, Clone, PartialEq)]
pub struct Coordinate {
    /// position (seconds)
    pub vec: Vec<f64>,
    /// error estimate
    pub error: f64,
    /// adjustment term
    pub adjustment: f64,
    /// height (seconds)
    pub height: f64,
}

impl Default for Coordinate {
    fn default() -> Self {
        Coordinate {
            vec: vec![0.0; DIM],
            error: ERROR_MAX,
            adjustment: 0.0,
            height: HEIGHT_MIN,
        }
    }
}

fn valid(f: f64) -> bool {
    f.is_finite()
}

impl Coordinate {
    /// All components finite?
    pub fn is_valid(&self) -> bool {
        self.vec.iter().all(|&f| valid(f))
            && valid(self.error)
            && valid(self.adjustment)
            && valid(self.height)
    }
    fn raw_distance(&self, o: &Coordinate) -> f64 {
        let m: f64 = self
            .vec
            .iter()
            .zip(&o.vec)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>()
            .sqrt();
        m + self.height + o.height
    }
    /// Estimated round-trip time to `o` (seconds). Incompatible dimensions
    /// give `None`.
    pub fn distance_secs(&self, o: &Coordinate) -> Option<f64> {
        if self.vec.len() != o.vec.len() {
            return None;
        }
        let d = self.raw_distance(o);
        let adj = d + self.adjustment + o.adjustment;
        Some(if adj > 0.0 { adj } else { d })
    }
    /// Estimated round-trip time to `o`.
    pub fn distance(&self, o: &Coordinate) -> Option<Duration> {
        self.distance_secs(o)
            .map(|s| Duration::from_secs_f64(s.clamp(0.0, 1.0e6)))
    }
    fn apply_force(&self, force: f64, o: &Coordinate) -> Coordinate {
        let mut ret = self.clone();
        let mut unit: Vec<f64> = self.vec.iter().zip(&o.vec).map(|(a, b)| a - b).collect();
        let mut mag = unit.iter().map(|x| x * x).sum::<f64>().sqrt();
        if mag > ZERO {
            unit.iter_mut().for_each(|x| *x /= mag);
        } else {
            for x in unit.iter_mut() {
                *x = rand::random::<f64>() - 0.5;
            }
            let m = unit.iter().map(|x| x * x).sum::<f64>().sqrt();
            if m > ZERO {
                unit.iter_mut().for_each(|x| *x /= m);
            } else {
                unit = vec![0.0; unit.len()];
                if let Some(f) = unit.first_mut() {
                    *f = 1.0;
                }
            }
            mag = 0.0;
        }
        for (r, u) in ret.vec.iter_mut().zip(&unit) {
            *r += u * force;
        }
        if mag > ZERO {
            ret.height = (ret.height + o.height) * force / mag + ret.height;
            ret.height = ret.height.max(HEIGHT_MIN);
        }
        ret
    }
    /// Encode as Serf does (go-msgpack struct).
    pub fn encode(&self, w: &mut Writer) {
        w.map_len(4).key("Vec").array_len(self.vec.len());
        for &x in &self.vec {
            w.f64(x);
        }
        w.key("Error")
            .f64(self.error)
            .key("Adjustment")
            .f64(self.adjustment)
            .key("Height")
            .f64(self.height);
    }
    /// Decode (at most 64 dimensions).
    pub fn decode(v: &Value) -> Result<Self, DecodeError> {
        let a = v.array_field("Vec")?;
        if a.len() > 64 {
            return Err(DecodeError::Field("Vec"));
        }
        Ok(Coordinate {
            vec: a
                .iter()
                .map(|x| x.as_f64().ok_or(DecodeError::Field("Vec")))
                .collect::<Result<_, _>>()?,
            error: v.f64_field("Error")?,
            adjustment: v.f64_field("Adjustment")?,
            height: v.f64_field("Height")?,
        })
    }
    /// The ack payload Serf sends: version byte + coordinate.
    pub fn ack_payload(&self) -> Vec<u8> {
        let mut w = Writer::with_type(PING_VERSION);
        self.encode(&mut w);
        w.into_bytes()
    }
    /// Parse an ack payload.
    pub fn from_ack_payload(p: &[u8]) -> Option<Coordinate> {
        let (&v, rest) = p.split_first()?;
        if v != PING_VERSION {
            return None;
        }
        Coordinate::decode(&decode_value(rest).ok()?).ok()
    }
}

/// Serf's Vivaldi client: our coordinate, updated from RTT observations.
#[derive(Debug, Clone)]
pub struct Client {
    coord: Coordinate,
    origin: Coordinate,
    adj_index: usize,
    adj_samples: Vec<f64>,
    filter: HashMap<String, Vec<f64>>,
}

impl Default for Client {
    fn default() -> Self {
        Client {
            coord: Coordinate::default(),
            origin: Coordinate::default(),
            adj_index: 0,
            adj_samples: vec![0.0; WINDOW],
            filter: HashMap::new(),
        }
    }
}

impl Client {
    /// Our current coordinate.
    pub fn coordinate(&self) -> &Coordinate {
        &self.coord
    }
    /// Forget a node's samples.
    pub fn forget(&mut self, node: &str) {
        self.filter.remove(node);
    }
    /// Update from an observed RTT to `node` whose coordinate is `other`.
    pub fn update(&mut self, node: &str, other: &Coordinate, rtt: Duration) -> bool {
        if other.vec.len() != self.coord.vec.len()
            || !other.is_valid()
            || rtt > Duration::from_secs(10)
        {
            return false;
        }
        if !self.filter.contains_key(node) && self.filter.len() >= MAX_FILTER_NODES {
            return false;
        }
        let samples = self.filter.entry(node.to_string()).or_default();
        samples.push(rtt.as_secs_f64());
        if samples.len() > FILTER {
            samples.remove(0);
        }
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        let rtt_s = sorted[sorted.len() / 2];
        // vivaldi
        let dist = self.coord.distance_secs(other).unwrap_or(0.0);
        let r = rtt_s.max(ZERO);
        let wrongness = (dist - r).abs() / r;
        let total = (self.coord.error + other.error).max(ZERO);
        let weight = self.coord.error / total;
        self.coord.error =
            (CE * weight * wrongness + self.coord.error * (1.0 - CE * weight)).min(ERROR_MAX);
        let force = CC * weight * (r - dist);
        self.coord = self.coord.apply_force(force, other);
        // adjustment (uses the filtered, unclamped rtt as Serf does)
        let raw = self.coord.raw_distance(other);
        self.adj_samples[self.adj_index] = rtt_s - raw;
        self.adj_index = (self.adj_index + 1) % WINDOW;
        self.coord.adjustment = self.adj_samples.iter().sum::<f64>() / (2.0 * WINDOW as f64);
        // gravity
        let d = self.origin.distance_secs(&self.coord).unwrap_or(0.0);
        let g = -(d / RHO).powi(2);
        self.coord = self.coord.apply_force(g, &self.origin);
        if !self.coord.is_valid() {
            self.coord = Coordinate::default();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converges_on_a_line() {
        // three nodes on a line: a-b 10 ms, b-c 10 ms, a-c 20 ms
        let rtt = [
            [0.0, 0.010, 0.020],
            [0.010, 0.0, 0.010],
            [0.020, 0.010, 0.0],
        ];
        let mut c: Vec<Client> = (0..3).map(|_| Client::default()).collect();
        for _ in 0..400 {
            for i in 0..3 {
                for j in 0..3 {
                    if i != j {
                        let other = c[j].coordinate().clone();
                        c[i].update(&j.to_string(), &other, Duration::from_secs_f64(rtt[i][j]));
                    }
                }
            }
        }
        let ac = c[0].coordinate().distance_secs(c[2].coordinate()).unwrap();
        let ab = c[0].coordinate().distance_secs(c[1].coordinate()).unwrap();
        assert!((ac - 0.020).abs() < 0.005, "a-c {ac}");
        assert!(ab < ac, "ab {ab} ac {ac}");
    }

    #[test]
    fn ack_payload_roundtrip_and_rejects() {
        let c = Coordinate {
            vec: vec![0.5; 8],
            error: 0.3,
            adjustment: -0.001,
            height: 0.0001,
        };
        assert_eq!(
            Coordinate::from_ack_payload(&c.ack_payload()),
            Some(c.clone())
        );
        assert_eq!(Coordinate::from_ack_payload(&[2, 0x80]), None);
        let mut cl = Client::default();
        let bad = Coordinate {
            vec: vec![f64::NAN; 8],
            ..c
        };
        assert!(!cl.update("x", &bad, Duration::from_millis(1)));
    }
}
