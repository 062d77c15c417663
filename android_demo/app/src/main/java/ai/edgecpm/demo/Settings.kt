package ai.edgecpm.demo

import android.content.Context
import android.security.keystore.KeyGenParameterSpec
import android.security.keystore.KeyProperties
import android.util.Base64
import java.security.GeneralSecurityException
import java.security.KeyStore
import javax.crypto.Cipher
import javax.crypto.KeyGenerator
import javax.crypto.SecretKey
import javax.crypto.spec.GCMParameterSpec

/** Execution providers offered; the runtime always falls back to CPU for what a provider refuses. */
enum class Provider(val label: String, val list: String) {
    CPU("CPU", "cpu"),
    XNNPACK("XNNPACK", "xnnpack,cpu"),
    NNAPI("NNAPI", "nnapi,cpu"),
    QNN("QNN (onnxruntime-android-qnn build only)", "qnn,cpu"),
}

data class Settings(
    val threads: Int = 0, // 0 = onnxruntime's default
    val provider: Provider = Provider.CPU,
    val localOnly: Boolean = false,
    val cloudUrl: String = "", // OpenAI-compatible base URL, e.g. https://host/v1
    val cloudModel: String = "",
    val maxTokens: Int = 256,
)

/** Plain settings in SharedPreferences; the cloud key only through [SecretStore]. */
class SettingsStore(context: Context) {
    private val prefs = context.getSharedPreferences("settings", Context.MODE_PRIVATE)
    private val secrets = SecretStore(context)

    fun load(): Settings = Settings(
        threads = prefs.getInt("threads", 0),
        provider = Provider.values().firstOrNull { it.name == prefs.getString("provider", null) } ?: Provider.CPU,
        localOnly = prefs.getBoolean("local_only", false),
        cloudUrl = prefs.getString("cloud_url", "") ?: "",
        cloudModel = prefs.getString("cloud_model", "") ?: "",
        maxTokens = prefs.getInt("max_tokens", 256),
    )

    fun save(s: Settings) {
        prefs.edit()
            .putInt("threads", s.threads)
            .putString("provider", s.provider.name)
            .putBoolean("local_only", s.localOnly)
            .putString("cloud_url", s.cloudUrl)
            .putString("cloud_model", s.cloudModel)
            .putInt("max_tokens", s.maxTokens)
            .apply()
    }

    fun apiKey(): String? = secrets.get(KEY_NAME)

    fun hasApiKey(): Boolean = secrets.has(KEY_NAME)

    /** null or "" removes the key. */
    fun setApiKey(key: String?) = secrets.put(KEY_NAME, key)

    private companion object {
        const val KEY_NAME = "cloud_api_key"
    }
}

/**
 * Secrets encrypted with an AES-256-GCM key that lives in the Android Keystore (API 23+, below minSdk 24):
 * the key never leaves the keystore, SharedPreferences holds only IV + ciphertext. Values are never logged.
 */
class SecretStore(context: Context) {
    private val prefs = context.getSharedPreferences("secrets", Context.MODE_PRIVATE)

    private fun key(): SecretKey {
        val ks = KeyStore.getInstance(KEYSTORE).apply { load(null) }
        (ks.getKey(ALIAS, null) as? SecretKey)?.let { return it }
        val gen = KeyGenerator.getInstance(KeyProperties.KEY_ALGORITHM_AES, KEYSTORE)
        gen.init(
            KeyGenParameterSpec.Builder(ALIAS, KeyProperties.PURPOSE_ENCRYPT or KeyProperties.PURPOSE_DECRYPT)
                .setBlockModes(KeyProperties.BLOCK_MODE_GCM)
                .setEncryptionPaddings(KeyProperties.ENCRYPTION_PADDING_NONE)
                .setKeySize(256)
                .build(),
        )
        return gen.generateKey()
    }

    fun has(name: String): Boolean = prefs.contains(name)

    fun put(name: String, value: String?) {
        if (value.isNullOrEmpty()) {
            prefs.edit().remove(name).apply()
            return
        }
        val cipher = Cipher.getInstance(TRANSFORMATION)
        cipher.init(Cipher.ENCRYPT_MODE, key()) // the keystore picks a fresh 12-byte IV
        val blob = cipher.iv + cipher.doFinal(value.toByteArray(Charsets.UTF_8))
        prefs.edit().putString(name, Base64.encodeToString(blob, Base64.NO_WRAP)).apply()
    }

    fun get(name: String): String? {
        val stored = prefs.getString(name, null) ?: return null
        return try {
            val blob = Base64.decode(stored, Base64.NO_WRAP)
            val cipher = Cipher.getInstance(TRANSFORMATION)
            cipher.init(Cipher.DECRYPT_MODE, key(), GCMParameterSpec(128, blob, 0, IV_BYTES))
            String(cipher.doFinal(blob, IV_BYTES, blob.size - IV_BYTES), Charsets.UTF_8)
        } catch (e: GeneralSecurityException) {
            null // the keystore key is gone (e.g. a reset lock screen): the user enters the key again
        } catch (e: IllegalArgumentException) {
            null
        }
    }

    private companion object {
        const val KEYSTORE = "AndroidKeyStore"
        const val ALIAS = "edgecpm.cloud"
        const val TRANSFORMATION = "AES/GCM/NoPadding"
        const val IV_BYTES = 12
    }
}
