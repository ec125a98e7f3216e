//! Stop strings matched across token boundaries and never emitted.

/// What [`StopMatcher::push`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopOutcome {
    /// No stop string yet; the text is safe to emit (possibly empty).
    Continue(String),
    /// A stop string was found; the text is what precedes it and is the last to emit. The
    /// stop string and everything after it are dropped.
    Stopped(String),
}

/// Finds stop strings in streamed text, across chunk boundaries, and never emits them.
///
/// Each stop string runs a streaming KMP matcher over the bytes, so a push costs
/// O(len(text) * number of stops) plus the held-back text, however long the generation.
/// Held-back text is the longest suffix that is a prefix of some stop string.
#[derive(Debug)]
pub struct StopMatcher {
    stops: Vec<Stop>,
    /// Text not yet emitted because it may be the start of a stop string.
    held: String,
    stopped: bool,
}

#[derive(Debug)]
struct Stop {
    pattern: Vec<u8>,
    /// KMP failure function: longest proper border of `pattern[..=i]`.
    fail: Vec<usize>,
    /// Bytes of `pattern` matched by the end of the text seen so far.
    state: usize,
}

impl Stop {
    fn new(pattern: Vec<u8>) -> Self {
        let mut fail = vec![0; pattern.len()];
        let mut k = 0;
        for i in 1..pattern.len() {
            while k > 0 && pattern[i] != pattern[k] {
                k = fail[k - 1];
            }
            if pattern[i] == pattern[k] {
                k += 1;
            }
            fail[i] = k;
        }
        Self {
            pattern,
            fail,
            state: 0,
        }
    }

    /// Feeds one byte; true when a full match ends with it.
    fn feed(&mut self, b: u8) -> bool {
        let mut k = self.state;
        if k == self.pattern.len() {
            k = self.fail[k - 1];
        }
        while k > 0 && self.pattern[k] != b {
            k = self.fail[k - 1];
        }
        if self.pattern[k] == b {
            k += 1;
        }
        self.state = k;
        k == self.pattern.len()
    }
}

impl StopMatcher {
    /// A matcher for `stops`; empty strings are ignored.
    pub fn new(stops: Vec<String>) -> Self {
        let stops = stops.into_iter().filter(|s| !s.is_empty());
        Self {
            stops: stops.map(|s| Stop::new(s.into_bytes())).collect(),
            held: String::new(),
            stopped: false,
        }
    }

    /// Adds newly decoded text. After `Stopped`, every later push returns `Stopped("")`.
    pub fn push(&mut self, text: &str) -> StopOutcome {
        if self.stopped {
            return StopOutcome::Stopped(String::new());
        }
        let base = self.held.len();
        // Earliest start among the matches completed by this text (first match per stop).
        let mut earliest: Option<usize> = None;
        for stop in &mut self.stops {
            for (i, &b) in text.as_bytes().iter().enumerate() {
                if stop.feed(b) {
                    let start = (base + i + 1).saturating_sub(stop.pattern.len());
                    earliest = Some(earliest.map_or(start, |e| e.min(start)));
                    break;
                }
            }
        }
        self.held.push_str(text);
        if let Some(start) = earliest {
            self.stopped = true;
            let mut before = std::mem::take(&mut self.held);
            before.truncate(floor_char_boundary(&before, start));
            return StopOutcome::Stopped(before);
        }
        // Every stop's state is the length of a suffix that is a prefix of it.
        let hold = self.stops.iter().map(|s| s.state).max().unwrap_or(0);
        let cut = floor_char_boundary(&self.held, self.held.len().saturating_sub(hold));
        let rest = self.held.split_off(cut);
        StopOutcome::Continue(std::mem::replace(&mut self.held, rest))
    }

    /// Releases the held-back text when the generation ends for another reason.
    pub fn finish(&mut self) -> String {
        for stop in &mut self.stops {
            stop.state = 0;
        }
        std::mem::take(&mut self.held)
    }
}

/// The largest char boundary of `s` that is `<= i`.
fn floor_char_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/`-separated stops and pushes; `want` lists each push's output (`!` appended when it
    /// stopped), then `finish`'s.
    fn check(stops: &str, pushes: &str, want: &str) {
        let mut m = StopMatcher::new(stops.split('/').map(String::from).collect());
        let mut out: Vec<String> = pushes
            .split('/')
            .map(|p| match m.push(p) {
                StopOutcome::Continue(text) => text,
                StopOutcome::Stopped(text) => text + "!",
            })
            .collect();
        out.push(m.finish());
        assert_eq!(out.join("/"), want, "stops {stops:?}, pushes {pushes:?}");
    }

    #[test]
    fn stop_strings() {
        check("###", "Hi #/#/# there/more", "Hi //!/!/"); // across pushes, never emitted
        check("###/", "x#/#/a/#", "x//##a//#"); // a diverging partial match is released
        check("world/lo w", "hello world", "hel!/"); // the earliest occurrence wins
        check("bc/abcd", "zabcd", "z!/");
        check("abcd/bc", "zab/c/d", "z/a!/!/"); // an incomplete earlier one does not
        check("abc/ab", "xa/bc", "x/!/"); // overlapping prefixes
        check("aab", "a/a/a/b.", "//a/!/"); // self-overlapping
        check("<|end|>", "<|end|>tail", "!/"); // at the very start
        check(
            "\u{1f980}x",
            "caf\u{e9}\u{1f980}/y\u{1f980}/x",
            "caf\u{e9}/\u{1f980}y/!/",
        );
        check("STOP", "the end ST", "the end /ST"); // finish releases held text
        check("", "abc", "abc/"); // no stops
    }

    #[test]
    fn long_generation_holds_little() {
        let mut m = StopMatcher::new(vec!["abcabd".into()]);
        let mut out = String::new();
        for _ in 0..10_000 {
            match m.push("abcab") {
                StopOutcome::Continue(text) => out.push_str(&text),
                StopOutcome::Stopped(_) => panic!("no stop expected"),
            }
            assert!(m.held.len() < 6);
        }
        out.push_str(&m.finish());
        assert_eq!(out.len(), 50_000);
    }
}
