//! A serde `Deserializer` over the spanned tree.
//!
//! Scalars are handed to `serde_json`'s own value deserializer; lists and objects are walked
//! here, so one rule can be enforced where serde would otherwise be lenient: a key given more
//! than once (a merged list) read into a struct or map is refused, naming every place it was
//! written. (serde's derived structs accept a sequence as positional fields, which would turn
//! `ports { }` twice into a confusing type error.)

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::forward_to_deserialize_any;

use super::tree::{Field, Kind, Node};

/// Deserializes one node; `key` is the key it was written under, for messages.
pub(crate) struct NodeDe<'a> {
    pub(crate) node: &'a Node,
    pub(crate) key: Option<&'a str>,
    pub(crate) src: &'a str,
}

impl NodeDe<'_> {
    /// The refusal for a repeated key read where one value is taken, if this node is one.
    fn repeated_error(&self) -> Option<serde_json::Error> {
        let Kind::List { repeated, .. } = &self.node.kind else {
            return None;
        };
        if repeated.len() < 2 {
            return None;
        }
        let places: Vec<String> = repeated
            .iter()
            .map(|s| {
                let (l, c) = super::line_column(self.src, s.start);
                format!("{l}:{c}")
            })
            .collect();
        Some(de::Error::custom(format!(
            "`{}` is given {} times (at {}) but takes one value",
            self.key.unwrap_or("?"),
            repeated.len(),
            places.join(" and ")
        )))
    }
}

impl<'de> de::Deserializer<'de> for NodeDe<'_> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match &self.node.kind {
            Kind::Scalar(v) => v.clone().deserialize_any(visitor),
            Kind::List { items, .. } => visitor.visit_seq(Seq {
                items: items.iter(),
                src: self.src,
            }),
            Kind::Object(fields) => visitor.visit_map(Map {
                fields: fields.iter(),
                value: None,
                src: self.src,
            }),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match &self.node.kind {
            Kind::Scalar(serde_json::Value::Null) => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.repeated_error() {
            Some(e) => Err(e),
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.repeated_error() {
            Some(e) => Err(e),
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        if let Some(e) = self.repeated_error() {
            return Err(e);
        }
        self.node
            .to_json()
            .deserialize_enum(name, variants, visitor)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.scalar_or_any(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.scalar_or_any(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.scalar_or_any(visitor)
    }

    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.scalar_or_any(visitor)
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.scalar_or_any(visitor)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.scalar_or_any(visitor)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.scalar_or_any(visitor)
    }

    forward_to_deserialize_any! {
        i8 i16 i32 i128 u8 u128 f32 f64 char bytes byte_buf unit unit_struct seq tuple
        tuple_struct identifier ignored_any
    }
}

impl NodeDe<'_> {
    /// A scalar where one value is taken: a repeated key is refused like a repeated block.
    fn scalar_or_any<'de, V: Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, serde_json::Error> {
        match self.repeated_error() {
            Some(e) => Err(e),
            None => de::Deserializer::deserialize_any(self, visitor),
        }
    }
}

struct Seq<'a, I> {
    items: I,
    src: &'a str,
}

impl<'de, 'a, I: Iterator<Item = &'a Node>> SeqAccess<'de> for Seq<'a, I> {
    type Error = serde_json::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        match self.items.next() {
            Some(node) => seed
                .deserialize(NodeDe {
                    node,
                    key: None,
                    src: self.src,
                })
                .map(Some),
            None => Ok(None),
        }
    }
}

struct Map<'a, I> {
    fields: I,
    value: Option<&'a Field>,
    src: &'a str,
}

impl<'de, 'a, I: Iterator<Item = &'a Field>> MapAccess<'de> for Map<'a, I> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match self.fields.next() {
            Some(field) => {
                self.value = Some(field);
                let key: de::value::StrDeserializer<'_, serde_json::Error> =
                    field.key.as_str().into_deserializer();
                seed.deserialize(key).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let field = self
            .value
            .take()
            .ok_or_else(|| <serde_json::Error as de::Error>::custom("a value without a key"))?;
        seed.deserialize(NodeDe {
            node: &field.value,
            key: Some(&field.written),
            src: self.src,
        })
    }
}
