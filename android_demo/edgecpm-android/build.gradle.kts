// The library apps use: ai.edgecpm (Java, no android.* imports) + libedgecpm_jni, libedgecpm and
// libedgecpm_ops built from ../runtime for the device ABI by CMake.
plugins {
    id("com.android.library")
}

val ortVersion = providers.gradleProperty("edgecpm.ortVersion").get()
val ortxVersion = providers.gradleProperty("edgecpm.ortxVersion").get()

// libedgecpm links libonnxruntime.so and includes onnxruntime's C/C++ headers. Both are inside the
// onnxruntime-android AAR (headers/ and jni/<abi>/libonnxruntime.so). Rather than rely on prefab metadata,
// this configuration resolves that same AAR and unpackOrt extracts those two folders into build/ort-aar,
// which CMake receives as EDGECPM_ORT_AAR. At run time the library comes from the AAR dependency below,
// packaged by AGP like any AAR's jni/ folder. The tokenizer library (libortextensions.so, from the
// onnxruntime-extensions-android AAR) needs nothing at build time: libedgecpm dlopen()s it by name.
val ortAar: Configuration by configurations.creating {
    isCanBeConsumed = false
    isTransitive = false
}

dependencies {
    ortAar("com.microsoft.onnxruntime:onnxruntime-android:$ortVersion@aar")
    api("com.microsoft.onnxruntime:onnxruntime-android:$ortVersion")
    api("com.microsoft.onnxruntime:onnxruntime-extensions-android:$ortxVersion")
}

val ortUnpacked = layout.buildDirectory.dir("ort-aar")
val unpackOrt = tasks.register<Copy>("unpackOrt") {
    from(providers.provider { zipTree(ortAar.singleFile) }) {  // resolved when the task runs
        include("headers/**", "jni/**")
    }
    into(ortUnpacked)
}

android {
    namespace = "ai.edgecpm"
    compileSdk = 35
    ndkVersion = "27.2.12479018"

    defaultConfig {
        minSdk = 24
        consumerProguardFiles("consumer-rules.pro")
        ndk {
            abiFilters += listOf("arm64-v8a", "x86_64")  // phones, and the x86_64 emulator
        }
        externalNativeBuild {
            cmake {
                arguments += listOf(
                    "-DEDGECPM_ORT_AAR=${ortUnpacked.get().asFile.absolutePath}",
                    // one C++ runtime per .so: our libraries talk to each other and to onnxruntime only
                    // through C APIs, and no libc++_shared.so can clash with another AAR's
                    "-DANDROID_STL=c++_static",
                    "-DCMAKE_BUILD_TYPE=Release",
                )
                // what AGP packages: the JNI glue, the runtime and the ai.edgecpm kernels (not edgecpm-run)
                targets += listOf("edgecpm_jni", "edgecpm", "edgecpm_ops")
            }
        }
    }

    externalNativeBuild {
        cmake {
            path = file("src/main/cpp/CMakeLists.txt")
            version = "3.22.1"
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_1_8
        targetCompatibility = JavaVersion.VERSION_1_8
    }
}

// CMake configures (and builds) only after the AAR is unpacked.
tasks.configureEach {
    if (name.startsWith("configureCMake") || name.startsWith("buildCMake")) dependsOn(unpackOrt)
}
