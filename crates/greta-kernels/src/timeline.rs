//! The kernel timeline: what kernels built with `cargo xtask build-kernels --timeline`
//! (NVIDIA sm_90 only) record at each block's wait for the kernel ahead
//! (kernels/greta_device.h, `g_wait_previous`): when thread 0 reached the wait and when the
//! wait let it go (%globaltimer, ns), its SM, block and grid. Each module keeps a ring of
//! the last `RING` stamps and a count of all it took; `greta bench --timeline FILE` reads
//! them back after its runs and writes them as CSV for `tools/gpu/timeline.py`, which orders
//! the launches and gives each kernel's time on the critical path.
//!
//! Why it exists: with overlapped launches (programmatic dependent launch) the blocks of
//! the next few kernels are resident before their inputs are ready, and where they land
//! decides how fast they run; Nsight Compute serialises kernels and cannot see it, and the
//! GPU machine has no Nsight Systems. Session 20 found SmolLM2's small decode products
//! packed 2-3 to an SM this way (docs/performance.md).

use std::io::{self, Write};

use crate::gpu::KernelError;

/// Bytes of one stamp (`g_stamp`: two u64, six u32).
pub const STAMP_BYTES: usize = 40;
/// Stamps a module's ring holds (`GRETA_TIMELINE_RING`).
pub const RING: usize = 1 << 20;
/// The ring's and its counter's names in the code objects.
pub const RING_SYMBOL: &str = "greta_timeline";
pub const COUNT_SYMBOL: &str = "greta_timeline_n";

/// One block's wait, as stamped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The code object of the kernel (its kernels/*.hip stem).
    pub module: &'static str,
    /// Order in which the module's blocks passed their waits.
    pub seq: u32,
    pub sm: u32,
    /// Linear block index and blocks in the grid, threads in the block.
    pub block: u32,
    pub grid: u32,
    pub threads: u32,
    /// %globaltimer when thread 0 reached the wait and when it passed it.
    pub arrive_ns: u64,
    pub release_ns: u64,
    /// SM clock cycles between the two.
    pub cycles: u32,
}

/// One module's ring as read from the device.
pub struct Ring {
    pub module: &'static str,
    /// Stamps taken since the module loaded (the counter); the ring keeps the last `RING`.
    pub count: u32,
    pub bytes: Vec<u8>,
}

impl Ring {
    /// The stamps the ring still holds, oldest first.
    pub fn stamps(&self) -> Result<Vec<Stamp>, KernelError> {
        if !self.bytes.len().is_multiple_of(STAMP_BYTES) {
            return Err(KernelError::Shape(format!(
                "timeline ring of {}: {} bytes is not a whole number of {STAMP_BYTES}-byte stamps",
                self.module,
                self.bytes.len()
            )));
        }
        let cap = self.bytes.len() / STAMP_BYTES;
        let n = self.count as usize;
        let first = n.saturating_sub(cap);
        Ok((first..n)
            .map(|i| {
                let b = &self.bytes[(i % cap) * STAMP_BYTES..][..STAMP_BYTES];
                let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
                let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
                Stamp {
                    module: self.module,
                    arrive_ns: u64_at(0),
                    release_ns: u64_at(8),
                    seq: u32_at(16),
                    sm: u32_at(20),
                    block: u32_at(24),
                    grid: u32_at(28),
                    threads: u32_at(32),
                    cycles: u32_at(36),
                }
            })
            .collect())
    }

    /// Stamps taken that the ring no longer holds (it keeps the last `RING`).
    pub fn lost(&self) -> u64 {
        let cap = (self.bytes.len() / STAMP_BYTES) as u64;
        (self.count as u64).saturating_sub(cap)
    }
}

/// The stamps as CSV, one line a block, with a header line.
pub fn write_csv(stamps: &[Stamp], w: &mut impl Write) -> io::Result<()> {
    writeln!(
        w,
        "module,seq,sm,block,grid,threads,arrive_ns,release_ns,cycles"
    )?;
    for s in stamps {
        writeln!(
            w,
            "{},{},{},{},{},{},{},{},{}",
            s.module, s.seq, s.sm, s.block, s.grid, s.threads, s.arrive_ns, s.release_ns, s.cycles
        )?;
    }
    Ok(())
}

/// The kernels a timing study launched, by launch shape (`GpuKernels::launched_shapes`):
/// `kernel,blocks,threads` lines under a header, for `tools/gpu/timeline.py` to name the
/// launches it finds by module and shape.
pub fn write_kernel_shapes(shapes: &[(String, u32, u32)], out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "kernel,blocks,threads")?;
    for (name, blocks, threads) in shapes {
        writeln!(out, "{name},{blocks},{threads}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp_bytes(arrive: u64, release: u64, seq: u32, sm: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&arrive.to_le_bytes());
        b.extend_from_slice(&release.to_le_bytes());
        for v in [seq, sm, 7, 72, 256, 99] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Kernel shapes as the CSV timeline.py reads.
    #[test]
    fn kernel_shapes_are_written_one_a_line_under_a_header() {
        let mut out = Vec::new();
        let shapes = [
            ("add_rmsnorm_split_f16".to_string(), 512, 256),
            ("embed_f16".to_string(), 512, 64),
        ];
        write_kernel_shapes(&shapes, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "kernel,blocks,threads\nadd_rmsnorm_split_f16,512,256\nembed_f16,512,64\n"
        );
    }

    /// The layout is kernels/greta_device.h's `g_stamp` (the header's text is checked
    /// too), and a ring that wrapped yields its last stamps, oldest first, and says how many
    /// it lost.
    #[test]
    fn a_ring_reads_back_its_last_stamps_in_order() {
        let header = include_str!("../../../kernels/greta_device.h");
        assert!(header.contains("unsigned long long arrive, release;"));
        assert!(header.contains("unsigned seq, sm, block, grid, threads, cycles;"));
        assert!(header.contains("#define GRETA_TIMELINE_RING (1u << 20)"));
        // A ring of 3 that took 5 stamps: slots hold seq 3, 4, 2.
        let mut bytes = Vec::new();
        for seq in [3u32, 4, 2] {
            bytes.extend(stamp_bytes(
                1000 + seq as u64,
                2000 + seq as u64,
                seq,
                seq + 10,
            ));
        }
        let ring = Ring {
            module: "gemv",
            count: 5,
            bytes,
        };
        let s = ring.stamps().unwrap();
        assert_eq!(s.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!(s[0].arrive_ns, 1002);
        assert_eq!(s[0].release_ns, 2002);
        assert_eq!(s[0].sm, 12);
        assert_eq!(
            (s[0].block, s[0].grid, s[0].threads, s[0].cycles),
            (7, 72, 256, 99)
        );
        assert_eq!(ring.lost(), 2);
        let mut csv = Vec::new();
        write_csv(&s, &mut csv).unwrap();
        let csv = String::from_utf8(csv).unwrap();
        assert_eq!(csv.lines().count(), 4);
        assert_eq!(csv.lines().nth(1), Some("gemv,2,12,7,72,256,1002,2002,99"));
        // A ring that has not wrapped holds its first stamps only.
        let short = Ring {
            module: "ops",
            count: 1,
            bytes: ring.bytes.clone(),
        };
        assert_eq!(short.stamps().unwrap().len(), 1);
        assert_eq!(short.lost(), 0);
        let bad = Ring {
            module: "ops",
            count: 1,
            bytes: vec![0; 41],
        };
        assert!(bad.stamps().is_err());
    }
}
