//! Frameworks' fencing epochs in the `fences` table, read at open and written by a commit.

use super::{Batch, Recovered, Store, StoreError};
use bramble_proto::FrameworkId;
use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

/// Framework id → its fencing epoch (u64 little-endian), and under the empty key (no
/// framework id is empty) the highest epoch ever given, so a framework removed and registered
/// again under its id still never sees an epoch repeat. Added like `framework_state`, without a
/// format bump and not as a field of the framework's record (postcard is positional): a store
/// without it has every framework at epoch 0, raised at its next subscription.
pub(super) const FENCES: TableDefinition<&str, u64> = TableDefinition::new("fences");
/// The `FENCES` key of the highest epoch given.
pub(super) const FENCE_HIGH: &str = "";

impl Store {
    /// Reads the epochs into `out` (a store without the table has none).
    pub(super) fn load_fences(
        &self,
        read: &ReadTransaction,
        out: &mut Recovered,
    ) -> Result<(), StoreError> {
        match read.open_table(FENCES) {
            Ok(fences) => {
                for row in fences.iter().map_err(self.redb("reading"))? {
                    let (k, v) = row.map_err(self.redb("reading"))?;
                    match k.value() {
                        FENCE_HIGH => out.fence_high = v.value(),
                        fw => out.fences.push((FrameworkId(fw.to_string()), v.value())),
                    }
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(self.redb("reading")(e)),
        }
        // Never below an epoch a framework holds, whatever the high mark says.
        out.fence_high = out
            .fences
            .iter()
            .map(|(_, e)| *e)
            .fold(out.fence_high, u64::max);
        Ok(())
    }

    /// Writes the batch's epochs inside `txn`.
    pub(super) fn write_fences(
        &self,
        txn: &WriteTransaction,
        batch: &Batch,
    ) -> Result<(), StoreError> {
        if !batch.fences.is_empty() || batch.fence_high.is_some() {
            let mut fences = txn.open_table(FENCES).map_err(self.redb("committing"))?;
            for (id, epoch) in &batch.fences {
                match epoch {
                    Some(e) => fences.insert(id.as_str(), *e).map(|_| ()),
                    None => fences.remove(id.as_str()).map(|_| ()),
                }
                .map_err(self.redb("writing a fencing epoch"))?;
            }
            if let Some(high) = batch.fence_high {
                fences
                    .insert(FENCE_HIGH, high)
                    .map_err(self.redb("writing a fencing epoch"))?;
            }
        }
        Ok(())
    }
}
