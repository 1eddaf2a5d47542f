//! Column chunks copied from Parquet files into one, without decoding or encoding a page.
//!
//! A one-node view (freezeframe.dissect.views) is the node's part with four more columns. pyarrow has already encoded
//! the part; encoding the same columns again for the view was a tenth of the `freezeframe dissect` command. `splice`
//! writes a file whose columns are those of `left`, then those of `right`, row group by row group: each column chunk
//! (its pages and statistics) is copied as it is, and a new footer describes them with the schema of both.

use bytes::Bytes;
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::{KeyValue, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;
use std::sync::Arc;

fn metadata(which: &str, file: &Bytes) -> Result<ParquetMetaData, String> {
    ParquetMetaDataReader::new().parse_and_finish(file).map_err(|e| format!("{which}: not a Parquet file: {e}"))
}

/// One file with the columns of `left` then those of `right` (same number of row groups, each with the same number
/// of rows), and `key_value` as its key-value metadata (pyarrow keeps the Arrow schema there). The footer's
/// `created_by` is `left`'s: the pages are that writer's.
pub fn splice(left: Bytes, right: Bytes, key_value: Vec<(String, String)>) -> Result<Vec<u8>, String> {
    let (lm, rm) = (metadata("left", &left)?, metadata("right", &right)?);
    let (lg, rg) = (lm.row_groups(), rm.row_groups());
    if lg.len() != rg.len() {
        return Err(format!("left has {} row groups, right {}", lg.len(), rg.len()));
    }
    for (index, (l, r)) in lg.iter().zip(rg).enumerate() {
        if l.num_rows() != r.num_rows() {
            return Err(format!("row group {index}: left has {} rows, right {}", l.num_rows(), r.num_rows()));
        }
    }
    let mut fields = lm.file_metadata().schema_descr().root_schema().get_fields().to_vec();
    fields.extend(rm.file_metadata().schema_descr().root_schema().get_fields().iter().cloned());
    let mut names = std::collections::HashSet::new();
    if let Some(twice) = fields.iter().find(|f| !names.insert(f.name().to_string())) {
        return Err(format!("column {} is in both files", twice.name()));
    }
    let root = lm.file_metadata().schema_descr().root_schema();
    let schema = Type::group_type_builder(root.name()).with_fields(fields).build().map_err(|e| e.to_string())?;
    let mut properties = WriterProperties::builder()
        .set_key_value_metadata(Some(key_value.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect()));
    if let Some(by) = lm.file_metadata().created_by() {
        properties = properties.set_created_by(by.to_string());
    }
    let mut out = Vec::with_capacity(left.len() + right.len() + 4096);
    let mut writer = SerializedFileWriter::new(&mut out, Arc::new(schema), Arc::new(properties.build()))
        .map_err(|e| e.to_string())?;
    for (l, r) in lg.iter().zip(rg) {
        let mut group = writer.next_row_group().map_err(|e| e.to_string())?;
        for (file, chunks, rows) in [(&left, l.columns(), l.num_rows()), (&right, r.columns(), r.num_rows())] {
            for chunk in chunks {
                let close = ColumnCloseResult {
                    bytes_written: chunk.compressed_size() as u64,
                    rows_written: rows as u64,
                    metadata: chunk.clone(),
                    bloom_filter: None,
                    column_index: None,
                    offset_index: None,
                };
                group.append_column(file, close).map_err(|e| e.to_string())?;
            }
        }
        group.close().map_err(|e| e.to_string())?;
    }
    writer.close().map_err(|e| e.to_string())?;
    Ok(out)
}
