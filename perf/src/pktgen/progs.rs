//! The generator's two XDP programs, hand-assembled with [`super::insn`].
//!
//! - [`tx_program`] runs under `BPF_PROG_TEST_RUN` in live-frames mode on the
//!   sending interface: it counts every frame in an array map, writes the UDP
//!   source port `sport + count % flows` (big-endian) into the frame, and
//!   returns `XDP_TX`, which the kernel turns into a transmit out of that
//!   interface. In live-frames mode the kernel does not re-copy the template
//!   into a recycled page, so writing the port on every run is what keeps the
//!   flow sequence exact.
//! - [`count_program`] is attached to the receiving interface: frames with the
//!   generator's magic are counted in per-CPU slot [`RX_MAGIC`] and dropped
//!   (`XDP_DROP`, so the sink costs almost nothing), everything else is
//!   counted in [`RX_OTHER`] and passed to the stack untouched (ARP, ping and
//!   TCP through the same interface keep working).
//!
//! Both bound-check the packet before touching it, so the verifier accepts
//! them and a short frame is never read past its end.

use super::frame::{MAGIC, MAGIC_OFFSET, MIN_FRAME, UDP_SPORT_OFFSET};
use super::insn::*;

/// Counter slot of the receive map: frames carrying the magic.
pub const RX_MAGIC: u32 = 0;
/// Counter slot of the receive map: every other frame.
pub const RX_OTHER: u32 = 1;
/// Slots in the receive map.
pub const RX_SLOTS: u32 = 2;

fn off(v: usize) -> i16 {
    i16::try_from(v).unwrap_or(i16::MAX)
}

/// The transmit program for counter map `map_fd` (one u64 slot, key 0).
pub fn tx_program(map_fd: i32, sport: u16, flows: u32) -> Result<Vec<Insn>, AsmError> {
    let mut a = Asm::new();
    a.op(LDX_W, 6, 1, 0, 0) // r6 = ctx->data
        .op(LDX_W, 7, 1, 4, 0) // r7 = ctx->data_end
        .op(MOV64_X, 2, 6, 0, 0)
        .op(ADD64_K, 2, 0, 0, i32::from(off(UDP_SPORT_OFFSET + 2)))
        .jump_to(JGT_X, 2, 7, 0, "out") // frame too short: send as is
        .op(ST_W, 10, 0, -4, 0) // key = 0 on the stack
        .ld_imm64(1, PSEUDO_MAP_FD, u64::try_from(map_fd).unwrap_or(0))
        .op(MOV64_X, 2, 10, 0, 0)
        .op(ADD64_K, 2, 0, 0, -4)
        .op(CALL, 0, 0, 0, HELPER_MAP_LOOKUP_ELEM)
        .jump_to(JEQ_K, 0, 0, 0, "out")
        .op(LDX_DW, 1, 0, 0, 0) // r1 = count
        .op(MOV64_X, 2, 1, 0, 0)
        .op(ADD64_K, 2, 0, 0, 1)
        .op(STX_DW, 0, 2, 0, 0); // count + 1
    if flows > 1 {
        a.op(MOD64_K, 1, 0, 0, i32::try_from(flows).unwrap_or(i32::MAX));
    }
    a.op(ADD64_K, 1, 0, 0, i32::from(sport))
        .op(TO_BE, 1, 0, 0, 16)
        .op(STX_H, 6, 1, off(UDP_SPORT_OFFSET), 0)
        .label("out")
        .op(MOV64_K, 0, 0, 0, xdp::TX)
        .op(EXIT, 0, 0, 0, 0);
    a.finish()
}

/// The receive counting program for per-CPU map `map_fd` ([`RX_SLOTS`] slots).
pub fn count_program(map_fd: i32) -> Result<Vec<Insn>, AsmError> {
    let magic = u64::from_le_bytes(MAGIC); // as a little-endian u64 load sees it
    let mut a = Asm::new();
    a.op(LDX_W, 6, 1, 0, 0)
        .op(LDX_W, 7, 1, 4, 0)
        .op(MOV64_K, 8, 0, 0, xdp::PASS) // verdict
        .op(MOV64_K, 9, 0, 0, RX_OTHER as i32) // slot
        .op(MOV64_X, 2, 6, 0, 0)
        .op(ADD64_K, 2, 0, 0, i32::from(off(MIN_FRAME)))
        .jump_to(JGT_X, 2, 7, 0, "count")
        .op(LDX_DW, 3, 6, off(MAGIC_OFFSET), 0)
        .ld_imm64(4, 0, magic)
        .jump_to(JNE_X, 3, 4, 0, "count")
        .op(MOV64_K, 8, 0, 0, xdp::DROP)
        .op(MOV64_K, 9, 0, 0, RX_MAGIC as i32)
        .label("count")
        .op(STX_W, 10, 9, -4, 0)
        .ld_imm64(1, PSEUDO_MAP_FD, u64::try_from(map_fd).unwrap_or(0))
        .op(MOV64_X, 2, 10, 0, 0)
        .op(ADD64_K, 2, 0, 0, -4)
        .op(CALL, 0, 0, 0, HELPER_MAP_LOOKUP_ELEM)
        .jump_to(JEQ_K, 0, 0, 0, "out")
        .op(LDX_DW, 1, 0, 0, 0)
        .op(ADD64_K, 1, 0, 0, 1)
        .op(STX_DW, 0, 1, 0, 0)
        .label("out")
        .op(MOV64_X, 0, 8, 0, 0)
        .op(EXIT, 0, 0, 0, 0);
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_assemble_and_end_in_exit() {
        for p in [tx_program(5, 1000, 64).unwrap(), count_program(5).unwrap()] {
            assert_eq!(p.last().map(|i| i.code), Some(EXIT));
            // Every map load names fd 5 as a pseudo map fd.
            let loads: Vec<&Insn> = p.iter().filter(|i| i.code == LD_IMM64).collect();
            assert!(loads
                .iter()
                .any(|i| i.regs >> 4 == PSEUDO_MAP_FD && i.imm == 5));
        }
    }

    #[test]
    fn one_flow_has_no_modulo() {
        let one = tx_program(3, 9, 1).unwrap();
        let many = tx_program(3, 9, 1000).unwrap();
        assert!(!one.iter().any(|i| i.code == MOD64_K));
        let m = many.iter().find(|i| i.code == MOD64_K).unwrap();
        assert_eq!(m.imm, 1000);
        assert_eq!(many.len(), one.len() + 1);
    }

    #[test]
    fn count_program_compares_the_magic_as_loaded() {
        let p = count_program(3).unwrap();
        let i = p
            .iter()
            .position(|i| i.code == LD_IMM64 && i.regs == 4)
            .unwrap();
        let v = u64::from(p[i].imm as u32) | (u64::from(p[i + 1].imm as u32) << 32);
        let mut frame = [0u8; MIN_FRAME];
        frame[MAGIC_OFFSET..].copy_from_slice(&MAGIC);
        let loaded = u64::from_le_bytes(frame[MAGIC_OFFSET..].try_into().unwrap());
        assert_eq!(v, loaded);
    }
}
