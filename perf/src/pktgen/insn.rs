//! A tiny eBPF assembler: just the instructions the generator's two XDP
//! programs need, encoded as the kernel's `struct bpf_insn`
//! (Documentation/bpf/standardization/instruction-set.rst).
//!
//! Programs are built as a `Vec<Insn>` with symbolic jump targets
//! ([`Asm::label`], [`Asm::jump_to`]) that [`Asm::finish`] resolves into the
//! 16-bit relative offsets the kernel wants, so no offset is counted by hand.
//! Nothing here talks to the kernel; [`super::bpf`] loads the result.

use std::collections::HashMap;

/// One eBPF instruction, laid out exactly as `struct bpf_insn` (8 bytes,
/// little-endian fields; `regs` holds dst in the low nibble, src in the high).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    /// Opcode: class | size/op | mode/source.
    pub code: u8,
    /// `dst_reg | src_reg << 4`.
    pub regs: u8,
    /// Signed offset (memory access displacement or jump distance).
    pub off: i16,
    /// Signed immediate.
    pub imm: i32,
}

impl Insn {
    /// Build an instruction from its fields.
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: (dst & 0x0f) | (src << 4),
            off,
            imm,
        }
    }

    /// The 8 bytes the kernel reads.
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = self.regs;
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b
    }
}

// Opcode bytes (class | op | source), from include/uapi/linux/bpf.h.
/// `dst = *(u32 *)(src + off)`.
pub const LDX_W: u8 = 0x61;
/// `dst = *(u64 *)(src + off)`.
pub const LDX_DW: u8 = 0x79;
/// `*(u16 *)(dst + off) = src`.
pub const STX_H: u8 = 0x6b;
/// `*(u32 *)(dst + off) = src`.
pub const STX_W: u8 = 0x63;
/// `*(u64 *)(dst + off) = src`.
pub const STX_DW: u8 = 0x7b;
/// `*(u32 *)(dst + off) = imm`.
pub const ST_W: u8 = 0x62;
/// `dst = imm` (64-bit).
pub const MOV64_K: u8 = 0xb7;
/// `dst = src` (64-bit).
pub const MOV64_X: u8 = 0xbf;
/// `dst += imm` (64-bit).
pub const ADD64_K: u8 = 0x07;
/// `dst %= imm` (64-bit, unsigned).
pub const MOD64_K: u8 = 0x97;
/// `dst = htobe<imm>(dst)` (BPF_ALU | BPF_END | BPF_TO_BE).
pub const TO_BE: u8 = 0xdc;
/// `if dst > src (unsigned) goto +off`.
pub const JGT_X: u8 = 0x2d;
/// `if dst == imm goto +off`.
pub const JEQ_K: u8 = 0x15;
/// `if dst != src goto +off`.
pub const JNE_X: u8 = 0x5d;
/// Call helper number `imm`.
pub const CALL: u8 = 0x85;
/// Return r0.
pub const EXIT: u8 = 0x95;
/// First half of a 64-bit immediate load (`BPF_LD | BPF_IMM | BPF_DW`).
pub const LD_IMM64: u8 = 0x18;
/// `src_reg` of [`LD_IMM64`] that turns the immediate into a map fd.
pub const PSEUDO_MAP_FD: u8 = 1;

/// Helper `bpf_map_lookup_elem` (include/uapi/linux/bpf.h, `FN(map_lookup_elem)` = 1).
pub const HELPER_MAP_LOOKUP_ELEM: i32 = 1;

/// XDP verdicts (`enum xdp_action`).
pub mod xdp {
    /// Drop the frame.
    pub const DROP: i32 = 1;
    /// Hand the frame to the kernel stack.
    pub const PASS: i32 = 2;
    /// Transmit the frame back out of the interface it arrived on.
    pub const TX: i32 = 3;
}

/// Errors building a program.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AsmError {
    /// A jump names a label that was never placed.
    #[error("jump to undefined label {0:?}")]
    UndefinedLabel(&'static str),
    /// A label was placed twice.
    #[error("label {0:?} placed twice")]
    DuplicateLabel(&'static str),
    /// A jump is too far for a 16-bit offset.
    #[error("jump to {0:?} is out of range")]
    OutOfRange(&'static str),
}

/// A program under construction, with labels for forward jumps.
#[derive(Debug, Default)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: HashMap<&'static str, usize>,
    fixups: Vec<(usize, &'static str)>,
    dup: Option<&'static str>,
}

impl Asm {
    /// An empty program.
    pub fn new() -> Asm {
        Asm::default()
    }

    /// Append one instruction.
    pub fn op(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) -> &mut Asm {
        self.insns.push(Insn::new(code, dst, src, off, imm));
        self
    }

    /// Append a 64-bit immediate load (two instruction slots).
    pub fn ld_imm64(&mut self, dst: u8, src: u8, v: u64) -> &mut Asm {
        // Truncations are the encoding: low and high 32 bits in two slots.
        let lo = (v & 0xffff_ffff) as u32 as i32;
        let hi = (v >> 32) as u32 as i32;
        self.op(LD_IMM64, dst, src, 0, lo);
        self.op(0, 0, 0, 0, hi)
    }

    /// Append a conditional (or, with [`JA`], unconditional) jump to `label`.
    pub fn jump_to(
        &mut self,
        code: u8,
        dst: u8,
        src: u8,
        imm: i32,
        label: &'static str,
    ) -> &mut Asm {
        self.fixups.push((self.insns.len(), label));
        self.op(code, dst, src, 0, imm)
    }

    /// Place `label` at the next instruction.
    pub fn label(&mut self, label: &'static str) -> &mut Asm {
        if self.labels.insert(label, self.insns.len()).is_some() {
            self.dup = Some(label);
        }
        self
    }

    /// Resolve jumps and return the instructions.
    pub fn finish(mut self) -> Result<Vec<Insn>, AsmError> {
        if let Some(l) = self.dup {
            return Err(AsmError::DuplicateLabel(l));
        }
        for (at, label) in &self.fixups {
            let target = *self
                .labels
                .get(label)
                .ok_or(AsmError::UndefinedLabel(label))?;
            // A jump's offset counts from the instruction after it.
            let off = target as i64 - (*at as i64 + 1);
            let off = i16::try_from(off).map_err(|_| AsmError::OutOfRange(label))?;
            self.insns[*at].off = off;
        }
        Ok(self.insns)
    }
}

/// Unconditional jump (`BPF_JMP | BPF_JA`).
pub const JA: u8 = 0x05;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_the_kernel_struct() {
        // r0 = 3; exit -- the bytes veth_anchor.sh packs by hand.
        assert_eq!(
            Insn::new(MOV64_K, 0, 0, 0, 3).to_bytes(),
            [0xb7, 0, 0, 0, 3, 0, 0, 0]
        );
        assert_eq!(
            Insn::new(EXIT, 0, 0, 0, 0).to_bytes(),
            [0x95, 0, 0, 0, 0, 0, 0, 0]
        );
        // *(u32 *)(r10 - 4) = r9: dst 10 low nibble, src 9 high nibble, off -4.
        assert_eq!(
            Insn::new(STX_W, 10, 9, -4, 0).to_bytes(),
            [0x63, 0x9a, 0xfc, 0xff, 0, 0, 0, 0]
        );
    }

    #[test]
    fn jumps_resolve_relative_to_the_next_instruction() {
        let mut a = Asm::new();
        a.jump_to(JEQ_K, 0, 0, 0, "out"); // 0
        a.op(MOV64_K, 0, 0, 0, 1); // 1
        a.ld_imm64(1, 0, 0x1122_3344_5566_7788); // 2, 3
        a.label("out");
        a.op(EXIT, 0, 0, 0, 0); // 4
        a.jump_to(JA, 0, 0, 0, "out"); // 5: backwards
        let p = a.finish().unwrap();
        assert_eq!(p[0].off, 3);
        assert_eq!(p[5].off, -2);
        assert_eq!(p[2].imm as u32, 0x5566_7788);
        assert_eq!(p[3].imm as u32, 0x1122_3344);
    }

    #[test]
    fn bad_labels_are_errors() {
        let mut a = Asm::new();
        a.jump_to(JA, 0, 0, 0, "nowhere");
        assert_eq!(a.finish(), Err(AsmError::UndefinedLabel("nowhere")));
        let mut a = Asm::new();
        a.label("x").label("x");
        assert_eq!(a.finish(), Err(AsmError::DuplicateLabel("x")));
    }
}
