# Builds kvlab's Windows installer, target\package\kvlab-VERSION-x64.msi, with WiX Toolset v3
# (packaging\windows\kvlab.wxs). The version comes from Cargo.toml (cargo metadata).
# Usage, from a "Developer PowerShell for VS" or any PowerShell:
#   powershell -ExecutionPolicy Bypass -File packaging\windows\build-msi.ps1 [-Features vulkan|cuda]
# Needs: Rust (x86_64-pc-windows-msvc), Visual Studio Build Tools (C++), CMake, LLVM (libclang),
# WiX Toolset v3 (candle, light, heat), ImageMagick (magick, for the icon). See README.md here.
param([string]$Features = "")
$ErrorActionPreference = "Stop"
Set-StrictMode -Version Latest

function Die([string]$msg) { [Console]::Error.WriteLine("build-msi: $msg"); exit 1 }
function Find-Tool([string]$name, [string]$hint, [string[]]$dirs = @()) {
    foreach ($d in $dirs) {
        if ($d -and (Test-Path (Join-Path $d $name))) { return (Join-Path $d $name) }
    }
    $c = Get-Command $name -ErrorAction SilentlyContinue
    if ($c) { return $c.Source }
    Die "$name not found: $hint"
}

$repo = (Resolve-Path (Join-Path $PSScriptRoot "..\..")).Path
Set-Location $repo
$out = Join-Path $repo "target\package"
New-Item -ItemType Directory -Force $out | Out-Null

$cargo = Find-Tool "cargo.exe" "install Rust with rustup (x86_64-pc-windows-msvc)"
$wixBin = if ($env:WIX) { Join-Path $env:WIX "bin" } else { "" }
$wixHint = "install WiX Toolset v3 (winget install WiXToolset.WiXToolset; it sets WIX) or put its bin folder on PATH"
$candle = Find-Tool "candle.exe" $wixHint @($wixBin)
$light = Find-Tool "light.exe" $wixHint @($wixBin)
$heat = Find-Tool "heat.exe" $wixHint @($wixBin)
$magick = Find-Tool "magick.exe" "install ImageMagick (winget install ImageMagick.ImageMagick), used to make kvlab.ico"

# Version and target folder, from Cargo.toml through cargo.
$meta = & $cargo metadata --format-version 1 --no-deps | ConvertFrom-Json
if ($LASTEXITCODE -ne 0) { Die "cargo metadata failed" }
$version = ($meta.packages | Where-Object { $_.name -eq "kvlab" }).version
if (-not $version) { Die "could not read kvlab's version from Cargo.toml" }
# MSI versions are numeric (major.minor.patch): drop a pre-release or build suffix.
$msiVersion = ($version -split '[-+]')[0]
Write-Host "build-msi: kvlab $version"

# 1. The release binary
$cargoArgs = @("build", "--release")
if ($Features) { $cargoArgs += @("--features", $Features) }
& $cargo @cargoArgs
if ($LASTEXITCODE -ne 0) { Die "cargo build --release failed" }
$binDir = Join-Path $meta.target_directory "release"
$exe = Join-Path $binDir "kvlab.exe"
if (-not (Test-Path $exe)) { Die "the release build did not produce $exe" }

# 2. The DLLs kvlab.exe needs that Windows does not ship (the Visual C++ runtime, OpenMP's
#    vcomp140.dll, CUDA's runtime in CUDA builds), installed next to kvlab.exe.
$vswhere = Join-Path ${env:ProgramFiles(x86)} "Microsoft Visual Studio\Installer\vswhere.exe"
if (-not (Test-Path $vswhere)) { Die "vswhere.exe not found: install Visual Studio Build Tools with the C++ workload" }
$vs = & $vswhere -latest -products * -requires Microsoft.VisualStudio.Component.VC.Tools.x86.x64 -property installationPath
if (-not $vs) { Die "no Visual Studio with the C++ tools (Microsoft.VisualStudio.Component.VC.Tools.x86.x64)" }
$dumpbin = Get-ChildItem (Join-Path $vs "VC\Tools\MSVC") -Recurse -Filter dumpbin.exe |
    Where-Object { $_.FullName -like "*\Hostx64\x64\*" } | Select-Object -First 1
if (-not $dumpbin) { Die "dumpbin.exe not found under $vs" }
$redist = Get-ChildItem (Join-Path $vs "VC\Redist\MSVC") -Directory |
    Where-Object { Test-Path (Join-Path $_.FullName "x64") } | Sort-Object Name -Descending | Select-Object -First 1
if (-not $redist) { Die "no Visual C++ redistributable folder under $vs\VC\Redist\MSVC" }
$shippable = @(Get-ChildItem (Join-Path $redist.FullName "x64") -Recurse -Filter *.dll |
    Where-Object { $_.FullName -notlike "*debug*" -and $_.FullName -notlike "*onecore*" })
if ($env:CUDA_PATH -and (Test-Path (Join-Path $env:CUDA_PATH "bin"))) {
    $shippable += @(Get-ChildItem (Join-Path $env:CUDA_PATH "bin") -Filter *.dll)
}
$deps = @(& $dumpbin.FullName /nologo /dependents $exe | ForEach-Object { $_.Trim() } | Where-Object { $_ -match '\.dll$' })
$runtimeDir = Join-Path $out "msi-runtime"
if (Test-Path $runtimeDir) { Remove-Item -Recurse -Force $runtimeDir }
New-Item -ItemType Directory $runtimeDir | Out-Null
# msvcp140.dll and vcomp140.dll need vcruntime140*.dll themselves.
foreach ($dll in (@($deps) + @("vcruntime140.dll", "vcruntime140_1.dll") | Sort-Object -Unique)) {
    $f = $shippable | Where-Object { $_.Name -ieq $dll } | Select-Object -First 1
    if ($f) { Copy-Item $f.FullName $runtimeDir }
}
foreach ($dll in $deps) {
    $shipped = Test-Path (Join-Path $runtimeDir $dll)
    $system = ($dll -match '^(api|ext)-ms-') -or (Test-Path (Join-Path $env:SystemRoot "System32\$dll"))
    if (-not $shipped -and -not $system) { Die "kvlab.exe needs $dll, which is neither part of Windows nor found in $($redist.FullName) or CUDA_PATH" }
}
Write-Host "build-msi: shipping $((Get-ChildItem $runtimeDir).Name -join ', ')"

# 3. The icon and the license as RTF (for the installer's license page)
& $magick -background none -density 384 "assets\kvlab.svg" -define "icon:auto-resize=256,128,64,48,32,16" (Join-Path $out "kvlab.ico")
if ($LASTEXITCODE -ne 0) { Die "ImageMagick could not render assets\kvlab.svg into kvlab.ico" }
$lines = Get-Content (Join-Path $repo "LICENSE") | ForEach-Object { ($_ -replace '\\', '\\' -replace '\{', '\{' -replace '\}', '\}') + '\par' }
$rtf = '{\rtf1\ansi\deff0{\fonttbl{\f0 Segoe UI;}}\f0\fs18 ' + ($lines -join "`r`n") + '}'
Set-Content -Path (Join-Path $out "License.rtf") -Value $rtf -Encoding Ascii

# 4. The MSI
$obj = Join-Path $out "msi-obj"
if (Test-Path $obj) { Remove-Item -Recurse -Force $obj }
New-Item -ItemType Directory $obj | Out-Null
& $heat dir $runtimeDir -nologo -cg Runtime -dr INSTALLDIR -srd -ag -sfrag -sreg -var var.RuntimeDir -out (Join-Path $obj "runtime.wxs")
if ($LASTEXITCODE -ne 0) { Die "heat failed" }
Push-Location $obj   # candle writes kvlab.wixobj and runtime.wixobj here
& $candle -nologo -arch x64 -ext WixUIExtension `
    "-dVersion=$msiVersion" "-dBinDir=$binDir" "-dPackageDir=$out" "-dRepoDir=$repo" "-dRuntimeDir=$runtimeDir" `
    (Join-Path $repo "packaging\windows\kvlab.wxs") (Join-Path $obj "runtime.wxs")
$rc = $LASTEXITCODE
Pop-Location
if ($rc -ne 0) { Die "candle failed" }
$msi = Join-Path $out "kvlab-$version-x64.msi"
& $light -nologo -ext WixUIExtension -cultures:en-us -out $msi (Join-Path $obj "kvlab.wixobj") (Join-Path $obj "runtime.wixobj")
if ($LASTEXITCODE -ne 0) { Die "light failed" }
Write-Host "build-msi: $msi ($([math]::Round((Get-Item $msi).Length / 1KB)) KiB)"
