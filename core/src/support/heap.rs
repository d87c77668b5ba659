//! What cached values hold on the heap, for the caches' byte bounds: every allocation a value
//! owns, by capacity (not length), as the allocator lays it out.
//!
//! The allocator of the filter is wasi-libc's dlmalloc (Rust's `System` on wasm32-wasip1);
//! natively it is glibc's malloc. Both put a size word before each block and round blocks up
//! to 16 bytes, with a minimum of four words: 16 bytes in the filter, 32 natively.

use serde_json::{Map, Value};
use std::mem::{align_of, size_of};

const WORD: usize = size_of::<usize>();

/// Bytes the allocator takes for a request of `n` bytes (nothing for none).
pub const fn alloc(n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    let block = n.saturating_add(WORD + 15) & !15;
    if block < 4 * WORD {
        4 * WORD
    } else {
        block
    }
}

/// A buffer of `capacity` values of `T` (a `Vec`'s or a `VecDeque`'s).
pub const fn buffer<T>(capacity: usize) -> usize {
    alloc(capacity.saturating_mul(size_of::<T>()))
}

/// An `Rc<T>`'s block: two counts, then the value.
pub const fn rc<T>() -> usize {
    let counts = (2 * WORD).next_multiple_of(align_of::<T>());
    alloc(counts + size_of::<T>())
}

pub fn string(s: &String) -> usize {
    alloc(s.capacity())
}

/// A `Vec<String>`: its buffer and each string.
pub fn strings(v: &Vec<String>) -> usize {
    buffer::<String>(v.capacity()) + v.iter().map(string).sum::<usize>()
}

/// A JSON value's heap: strings, arrays and objects, nested.
pub fn value(v: &Value) -> usize {
    match v {
        Value::String(s) => string(s),
        Value::Array(items) => {
            buffer::<Value>(items.capacity()) + items.iter().map(value).sum::<usize>()
        }
        Value::Object(m) => map(m),
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

/// A JSON object: its B-tree's nodes, keys and values.
pub fn map(m: &Map<String, Value>) -> usize {
    btree_nodes(m.len()) + m.iter().map(|(k, v)| string(k) + value(v)).sum::<usize>()
}

/// Entries a B-tree node holds at most (`std::collections::BTreeMap`'s `CAPACITY`).
const NODE_ENTRIES: usize = 11;
/// A leaf of a `BTreeMap<String, Value>`: parent pointer, index and length, room for 11 keys
/// and 11 values.
const LEAF: usize = (WORD + 4 + NODE_ENTRIES * (size_of::<String>() + size_of::<Value>()))
    .next_multiple_of(align_of::<Value>());
/// An internal node: a leaf's fields and 12 child pointers.
const INTERNAL: usize = LEAF + (NODE_ENTRIES + 1) * WORD;

/// The nodes of a `BTreeMap<String, Value>` of `len` entries. The tree's shape is not
/// visible: up to 11 entries are one leaf; a larger map is counted at 8 entries a node, about
/// how full insertion leaves them (a map built at once fills its nodes).
fn btree_nodes(len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    if len <= NODE_ENTRIES {
        return alloc(LEAF);
    }
    let leaves = len.div_ceil(8);
    let mut internals = 0;
    let mut level = leaves;
    while level > 1 {
        level = level.div_ceil(8);
        internals += level;
    }
    leaves * alloc(LEAF) + internals * alloc(INTERNAL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn an_allocation_takes_a_size_word_rounded_up_to_16_bytes() {
        assert_eq!(alloc(0), 0);
        assert_eq!(alloc(1), 4 * WORD, "the smallest block");
        assert_eq!(alloc(100), (100 + WORD).next_multiple_of(16));
        // A block of 1008 bytes holds 1008 - WORD; one byte more takes the next size.
        assert_eq!(alloc(1008 - WORD), 1008);
        assert_eq!(alloc(1009 - WORD), 1024);
    }

    #[test]
    fn a_string_is_counted_by_capacity_not_length() {
        let mut s = String::with_capacity(200);
        s.push('x');
        assert_eq!(string(&s), alloc(200));
    }

    #[test]
    fn a_list_of_strings_counts_its_buffer_and_each_string() {
        let mut v = Vec::with_capacity(8);
        v.push("a".repeat(40));
        v.push("b".repeat(3));
        assert_eq!(
            strings(&v),
            alloc(8 * size_of::<String>()) + alloc(40) + alloc(3)
        );
    }

    #[test]
    fn an_empty_map_holds_nothing() {
        assert_eq!(map(&Map::new()), 0);
    }

    #[test]
    fn a_map_of_up_to_eleven_entries_is_one_node() {
        let node = alloc(LEAF);
        assert_eq!(map(&object(json!({"a": 1}))), node + alloc(1));
        let eleven: Map<String, Value> = (0..11).map(|i| (i.to_string(), json!(i))).collect();
        assert_eq!(map(&eleven), node + 10 * alloc(1) + alloc(2));
    }

    #[test]
    fn a_larger_map_counts_a_node_per_eight_entries_and_the_nodes_above() {
        let large: Map<String, Value> = (0..100).map(|i| (format!("{:03}", i), json!(i))).collect();
        // 13 leaves, 2 internal nodes above them, and the root.
        assert_eq!(
            map(&large),
            100 * alloc(3) + 13 * alloc(LEAF) + 3 * alloc(INTERNAL)
        );
    }

    #[test]
    fn nested_values_are_counted_down_to_their_strings() {
        let Value::Array(items) = json!(["abc", 1, true, null]) else {
            unreachable!()
        };
        let array = Value::Array(items.clone());
        assert_eq!(value(&array), buffer::<Value>(items.capacity()) + alloc(3));
        let inner = json!({"inner": "abc"});
        let outer = object(json!({"k": inner.clone()}));
        let node = alloc(LEAF);
        assert_eq!(value(&inner), node + alloc(5) + alloc(3));
        assert_eq!(map(&outer), node + alloc(1) + value(&inner));
    }

    #[test]
    fn an_rc_block_holds_two_counts_and_the_value() {
        assert_eq!(rc::<u8>(), alloc(2 * WORD + 1));
        assert_eq!(rc::<[u64; 4]>(), alloc((2 * WORD).next_multiple_of(8) + 32));
    }
}
