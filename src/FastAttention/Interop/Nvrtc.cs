// [LibraryImport] bindings to NVRTC (nvrtc.h): version, supported architectures, programs, logs, CUBIN/PTX, lowered names.
using System.Runtime.InteropServices;

namespace FastAttention.Interop;

/// <summary>nvrtcResult.</summary>
internal enum NvrtcResult
{
    Success = 0,
    OutOfMemory = 1,
    ProgramCreationFailure = 2,
    InvalidInput = 3,
    InvalidProgram = 4,
    InvalidOption = 5,
    Compilation = 6,
    BuiltinOperationFailure = 7,
    NoNameExpressionsAfterCompilation = 8,
    NoLoweredNamesBeforeCompilation = 9,
    NameExpressionNotValid = 10,
    InternalError = 11,
}

/// <summary>The NVRTC entry points the compiler uses. A program handle is an <see cref="nint"/>; sizes are <see cref="nuint"/>.</summary>
internal static unsafe partial class Nvrtc
{
    [LibraryImport(NativeLibraries.Nvrtc)] public static partial nint nvrtcGetErrorString(NvrtcResult result);
    [LibraryImport(NativeLibraries.Nvrtc)] public static partial NvrtcResult nvrtcVersion(out int major, out int minor);
    [LibraryImport(NativeLibraries.Nvrtc)] public static partial NvrtcResult nvrtcGetNumSupportedArchs(out int count);
    [LibraryImport(NativeLibraries.Nvrtc)] public static partial NvrtcResult nvrtcGetSupportedArchs(int* architectures);

    [LibraryImport(NativeLibraries.Nvrtc, StringMarshalling = StringMarshalling.Utf8)]
    public static partial NvrtcResult nvrtcCreateProgram(out nint program, string source, string name, int headerCount, byte** headers, byte** includeNames);
    [LibraryImport(NativeLibraries.Nvrtc)] public static partial NvrtcResult nvrtcDestroyProgram(ref nint program);
    [LibraryImport(NativeLibraries.Nvrtc)] public static partial NvrtcResult nvrtcCompileProgram(nint program, int optionCount, byte** options);

    [LibraryImport(NativeLibraries.Nvrtc)] public static partial NvrtcResult nvrtcGetProgramLogSize(nint program, out nuint size);
    [LibraryImport(NativeLibraries.Nvrtc)] public static partial NvrtcResult nvrtcGetProgramLog(nint program, byte* log);
    [LibraryImport(NativeLibraries.Nvrtc)] public static partial NvrtcResult nvrtcGetCUBINSize(nint program, out nuint size);
    [LibraryImport(NativeLibraries.Nvrtc)] public static partial NvrtcResult nvrtcGetCUBIN(nint program, byte* cubin);
    [LibraryImport(NativeLibraries.Nvrtc)] public static partial NvrtcResult nvrtcGetPTXSize(nint program, out nuint size);
    [LibraryImport(NativeLibraries.Nvrtc)] public static partial NvrtcResult nvrtcGetPTX(nint program, byte* ptx);

    [LibraryImport(NativeLibraries.Nvrtc, StringMarshalling = StringMarshalling.Utf8)]
    public static partial NvrtcResult nvrtcAddNameExpression(nint program, string nameExpression);
    [LibraryImport(NativeLibraries.Nvrtc, StringMarshalling = StringMarshalling.Utf8)]
    public static partial NvrtcResult nvrtcGetLoweredName(nint program, string nameExpression, out nint loweredName);
}
