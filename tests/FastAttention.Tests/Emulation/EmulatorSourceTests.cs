// Unit tests of the emulator's source rewrite (EmulatorSource): inline PTX -> fa_ptx calls with the operand order of
// the template, __shared__ -> static storage, dynamic shared memory -> the arena, unsupported asm -> a clear error.
namespace FastAttention.Tests.Emulation;

[TestFixture]
public sealed class EmulatorSourceTests
{
    [Test]
    public void AsmBecomesCallsWithTheTemplatesOperandOrder()
    {
        const string source = """
            FA_DEVICE fa_u32 f(float lo, float hi) { fa_u32 r; asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo)); return r; }
            """;
        string s = EmulatorSource.TranslateAsm(source);
        Assert.That(s, Does.Contain("fa_ptx::cvt_rn_f16x2_f32__s_s_s((r), static_cast<float>(hi), static_cast<float>(lo));"));
        Assert.That(s, Does.Not.Contain("asm("));
    }

    [Test]
    public void VectorsAddressesScopesAndLocalRegisters()
    {
        const string source = """
            asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];" : "=r"(r[0]), "=r"(r[1]) : "r"(addr) : "memory");
            asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
            asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(smem), "l"(gmem), "r"(bytes) : "memory");
            asm volatile("cp.async.wait_group %0;" :: "n"(N) : "memory");
            """;
        string s = EmulatorSource.TranslateAsm(source);
        Assert.That(s, Does.Contain("fa_ptx::ldmatrix_sync_aligned_m8n8_x2_trans_shared_b16__v2_m((r[0]), (r[1]), static_cast<fa_emu::u32>(addr));"));
        Assert.That(s, Does.Contain("{ fa_emu::u64 t = 0; fa_ptx::cvta_to_shared_u64__s_s(t, fa_ptx::to_u64(p)); fa_ptx::cvt_u32_u64__s_s((a), t); }"));
        Assert.That(s, Does.Contain("fa_ptx::cp_async_cg_shared_global__m_m_s_s(static_cast<fa_emu::u32>(smem), fa_ptx::to_u64(gmem), 16, static_cast<fa_emu::u32>(bytes));"));
        Assert.That(s, Does.Contain("fa_ptx::cp_async_wait_group__s((N));"));
        Assert.That(s.Count(c => c == '\n'), Is.EqualTo(source.Count(c => c == '\n')), "line numbers are kept");
    }

    [Test]
    public void AsmInsideAMacroKeepsItsLineContinuation()
    {
        const string source = "#define FA_COMMIT() asm volatile(\"cp.async.commit_group;\" \\\n    ::: \"memory\")\nint after;";
        Assert.That(EmulatorSource.TranslateAsm(source),
            Is.EqualTo("#define FA_COMMIT() do { fa_ptx::cp_async_commit_group__(); } while (0)\\\n\nint after;"));
    }

    [Test]
    public void AsmInCommentsAndStringsIsLeftAlone()
    {
        const string source = "// asm(\"bad\")\n/* asm(\"bad\") */ const char* s = \"asm(\\\"x\\\")\"; int plasma(int x);";
        Assert.That(EmulatorSource.TranslateAsm(source), Is.EqualTo(source));
    }

    [Test]
    public void UnsupportedAsmIsAClearError()
    {
        Assert.That(() => EmulatorSource.TranslateAsm("asm(\"@p add.s32 %0, %0, 1;\" : \"+r\"(x));"),
            Throws.TypeOf<UnsupportedAsmException>().With.Message.Contains("predicated"));
        Assert.That(() => EmulatorSource.TranslateAsm("asm(\"mov.b32 %0, %1;\" : [out] \"=r\"(x) : \"r\"(y));"),
            Throws.TypeOf<UnsupportedAsmException>().With.Message.Contains("named operands"));
        Assert.That(() => EmulatorSource.TranslateAsm("asm(\"mov.b32 %0, %3;\" : \"=r\"(x) : \"r\"(y));"),
            Throws.TypeOf<UnsupportedAsmException>().With.Message.Contains("%3"));
    }

    [Test]
    public void SharedDeclarationsAreRewritten()
    {
        const string source = """
            __shared__ alignas(16) fa_elem sa[16 * 16];
            __shared__ float m[4];
            extern __shared__ alignas(16) unsigned char smem[];
            extern __shared__ float4 buf [ ];
            """;
        string s = EmulatorSource.RewriteShared(source);
        Assert.That(s, Does.Contain("alignas(16) fa_emu_shared_storage fa_elem sa[16 * 16];"));
        Assert.That(s, Does.Contain(" fa_emu_shared_storage float m[4];"));
        Assert.That(s, Does.Contain("unsigned char* const smem = reinterpret_cast<unsigned char*>(fa_emu::dynamic_smem);"));
        Assert.That(s, Does.Contain("float4* const buf = reinterpret_cast<float4*>(fa_emu::dynamic_smem);"));
        Assert.That(s, Does.Not.Contain("__shared__"));
    }
}
