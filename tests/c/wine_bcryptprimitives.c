/* Test-only stand-in for Windows' bcryptprimitives.dll under wine 8 (Debian 12), which lacks
 * it. Rust's standard library takes its random numbers from ProcessPrng there (Windows 10 and
 * later always have it); this forwards to RtlGenRandom. Never shipped: tests/windows.rs puts
 * it beside the test programs only. */
#include <windows.h>
#include <ntsecapi.h>

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    return RtlGenRandom(data, (ULONG)len);
}
