package ai.edgecpm.demo

import ai.edgecpm.ArtifactManifest
import ai.edgecpm.Chat
import ai.edgecpm.Edgecpm
import ai.edgecpm.EdgecpmException
import ai.edgecpm.Options
import ai.edgecpm.Params
import ai.edgecpm.Result
import ai.edgecpm.TokenCallback
import android.app.ActivityManager
import android.app.Application
import android.content.Context
import android.os.Handler
import android.os.Looper
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateListOf
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.setValue
import androidx.lifecycle.AndroidViewModel
import androidx.lifecycle.viewModelScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.asCoroutineDispatcher
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withContext
import java.io.File
import java.util.Locale
import java.util.concurrent.Executors

class UiMessage(val role: String, text: String = "") {
    var text by mutableStateOf(text)
    var meta by mutableStateOf("") // where the answer came from, tok/s
    var error by mutableStateOf(false)
}

/**
 * The chat screen's state and the device-cloud routing. The routing follows edgecpm/app/router.py where it
 * applies on a phone, checked in this order:
 *   memory   the manifest's weights + state at the context exceed the memory the system says is free
 *            (checked before loading), or the model cannot be opened
 *   user     the "Cloud" button
 *   context  EDGECPM_ERR_CONTEXT_OVERFLOW: the conversation is longer than the local context
 *   failure  any other local error
 * "Local only" makes the cloud impossible (no client, no socket). When the cloud fails, a local answer is
 * made where one can be; otherwise the answer is a one-line error. Every answer says where it came from.
 * All native calls run on one engine thread; only Edgecpm.stop() is called from the main thread.
 */
class ChatViewModel(app: Application) : AndroidViewModel(app) {
    private val store = SettingsStore(app)
    private val engineThread = Executors.newSingleThreadExecutor { r -> Thread(r, "edgecpm-engine") }
    private val engine = engineThread.asCoroutineDispatcher()
    private val main = Handler(Looper.getMainLooper())
    private val nativeLibDir = app.applicationInfo.nativeLibraryDir

    val messages = mutableStateListOf<UiMessage>()
    var settings by mutableStateOf(store.load())
        private set
    var hasApiKey by mutableStateOf(store.hasApiKey())
        private set
    var models by mutableStateOf(listOf<File>())
        private set
    var current by mutableStateOf<File?>(null)
        private set
    var status by mutableStateOf("no model: push one with adb (see README)")
        private set
    var placement by mutableStateOf("")
        private set
    var busy by mutableStateOf(false)
        private set

    // Written on the engine thread only; read by stop() on the main thread.
    @Volatile
    private var model: Edgecpm? = null
    private var chat: Chat? = null
    private var chatInSync = true // false after a local failure: the chat's messages are rebuilt before the next turn
    private var localProblem: String? = "no model loaded"

    // The conversation as messages (what the cloud gets; what a local re-prefill uses).
    private val conversation = mutableListOf<Pair<String, String>>()
    @Volatile
    private var cloudInFlight: CloudClient? = null

    init {
        rescan()
    }

    /** Artifact folders (with edgecpm.json) in files/models and, for a plain `adb push`, the external files dir. */
    fun rescan() {
        val app = getApplication<Application>()
        val roots = listOfNotNull(File(app.filesDir, "models"), app.getExternalFilesDir(null)?.let { File(it, "models") })
        models = roots.flatMap { root -> root.listFiles()?.toList() ?: emptyList() }
            .filter { File(it, ArtifactManifest.FILE).isFile }
            .sortedBy { it.name }
        if (current == null) models.firstOrNull()?.let { select(it) }
    }

    fun select(dir: File) {
        if (busy) return
        current = dir
        messages.clear()
        status = "loading ${dir.name}…"
        viewModelScope.launch {
            val s = settings
            val (text, nodes) = withContext(engine) { load(dir, s) }
            status = text
            placement = nodes
        }
    }

    /** Engine thread: policy (1) from the manifest, then open with the provider, falling back to CPU. */
    private fun load(dir: File, s: Settings): Pair<String, String> {
        closeModel()
        conversationReset()
        val manifest = try {
            ArtifactManifest.read(dir)
        } catch (e: EdgecpmException) {
            localProblem = e.message
            return "${dir.name}: ${e.message}" to ""
        }
        val ctx = manifest.runtimeContext(0)
        val need = manifest.memoryBytes(ctx)
        val free = freeMemoryBytes()
        if (need > free) {
            localProblem = "the model needs ${need / MB} MB (weights + state at $ctx tokens), ${free / MB} MB are free"
            return "${dir.name}: $localProblem; not loaded" to ""
        }
        val options = Options().threads(s.threads).providers(s.provider.list).reportPlacement(true)
        File(nativeLibDir, "libedgecpm_ops.so").takeIf { it.isFile }?.let { options.opsLibrary(it.path) }
        var note = ""
        val m = try {
            try {
                Edgecpm.open(dir.path, options)
            } catch (e: EdgecpmException) {
                if (s.provider == Provider.CPU || e.status() != EdgecpmException.RUNTIME) throw e
                note = " (${s.provider.label} failed: ${e.message}; on CPU)"
                Edgecpm.open(dir.path, options.providers("cpu"))
            }
        } catch (e: EdgecpmException) {
            localProblem = e.message
            return "${dir.name}: ${e.message}" to ""
        } catch (e: LinkageError) { // libedgecpm_jni (or a library it needs) missing from the APK for this ABI
            localProblem = "the native runtime did not load (${e.message})"
            return "${dir.name}: $localProblem" to ""
        }
        model = m
        localProblem = null
        chat = if (manifest.hasChatTemplate) m.chat(null) else null
        chatInSync = chat != null
        return "${dir.name} · ${s.provider.label}$note · ${m.context()} tokens" to m.placement()
    }

    fun saveSettings(new: Settings, apiKey: String?) {
        val reload = new.threads != settings.threads || new.provider != settings.provider
        store.save(new)
        if (apiKey != null) {
            store.setApiKey(apiKey)
            hasApiKey = store.hasApiKey()
        }
        settings = new
        if (reload) current?.let { select(it) }
    }

    fun newChat() {
        if (busy) return
        messages.clear()
        viewModelScope.launch { withContext(engine) { conversationReset() } }
    }

    private fun conversationReset() { // engine thread
        conversation.clear()
        chat?.reset()
        chatInSync = chat != null
    }

    fun stop() {
        model?.stop() // safe from any thread
        cloudInFlight?.cancel()
    }

    fun send(text: String, askCloud: Boolean) {
        if (busy || text.isBlank()) return
        messages.add(UiMessage("user", text))
        val answer = UiMessage("assistant")
        messages.add(answer)
        busy = true
        viewModelScope.launch {
            try {
                withContext(engine) { conversation.add("user" to text) }
                route(askCloud, answer)
            } finally {
                withContext(engine) {
                    if (!answer.error) conversation.add("assistant" to answer.text) else conversation.removeAt(conversation.size - 1)
                }
                busy = false
            }
        }
    }

    private fun cloudClient(): CloudClient? {
        val s = settings
        if (s.localOnly || s.cloudUrl.isBlank()) return null
        return CloudClient(s.cloudUrl, s.cloudModel, store.apiKey())
    }

    private suspend fun route(askCloud: Boolean, answer: UiMessage) {
        val problem = withContext(engine) { localProblem }
        when {
            problem != null -> viaCloud(answer, "local model unavailable: $problem", localFallback = false)
            askCloud -> viaCloud(answer, "asked for", localFallback = true)
            else -> {
                val failure = local(answer)
                if (failure != null) viaCloud(answer, failure, localFallback = false)
            }
        }
    }

    /** Streams a local answer into [answer]; returns why the cloud should answer instead, or null. */
    private suspend fun local(answer: UiMessage, note: String = ""): String? {
        val s = settings
        return try {
            val r: Result = withContext(engine) {
                val m = model ?: throw EdgecpmException(EdgecpmException.INVALID_ARGUMENT, "no model loaded")
                val params = Params().maxTokens(s.maxTokens)
                val callback = TokenCallback { piece, _ -> if (piece.isNotEmpty()) main.post { answer.text += piece } }
                val c = chat
                try {
                    if (c != null) {
                        if (!chatInSync) { // rebuild the chat from the conversation: one full prefill, then reuse again
                            c.reset()
                            for ((role, content) in conversation.dropLast(1)) c.add(role, content)
                            chatInSync = true
                        }
                        c.send(conversation.last().second, params, callback)
                    } else { // no chat template: this fails with the runtime's message (a local failure)
                        m.respond(conversation.map { it.first }.toTypedArray(), conversation.map { it.second }.toTypedArray(),
                                  params, callback)
                    }
                } catch (e: EdgecpmException) {
                    chatInSync = false // the chat may hold the user turn without its answer
                    throw e
                }
            }
            answer.text = r.text
            answer.meta = String.format(Locale.ROOT, "on device · %s · %.1f tok/s · %d tokens%s%s", s.provider.label,
                                        r.decodeTokensPerSecond, r.generatedTokens,
                                        if (r.finish == Result.Finish.CALLBACK) " · stopped" else "", note)
            null
        } catch (e: EdgecpmException) {
            answer.text = ""
            if (e.status() == EdgecpmException.CONTEXT_OVERFLOW) "the conversation is longer than the local context"
            else "local failure: ${e.message}"
        }
    }

    private suspend fun viaCloud(answer: UiMessage, reason: String, localFallback: Boolean) {
        val cloud = cloudClient()
        if (cloud == null) {
            if (localFallback) {
                local(answer, " · no cloud (local only, or no endpoint set)")?.let { fail(answer, it) }
            } else {
                fail(answer, "$reason; no cloud (local only, or no endpoint set)")
            }
            return
        }
        answer.meta = "asking the cloud (${cloud.model.ifEmpty { "default" }}): $reason"
        val history = withContext(engine) { conversation.toList() }
        val t0 = System.nanoTime()
        try {
            cloudInFlight = cloud
            val text = withContext(Dispatchers.IO) { cloud.complete(history, settings.maxTokens) }
            answer.text = text
            answer.meta = String.format(Locale.ROOT, "cloud · %s · %s · %.1f s", cloud.model.ifEmpty { "default" }, reason,
                                        (System.nanoTime() - t0) / 1e9)
            withContext(engine) { // the local chat did not see this turn: append it, so the next local turn reuses the state
                val c = chat
                if (c != null && chatInSync) {
                    try {
                        c.add("user", history.last().second)
                        c.add("assistant", text)
                    } catch (e: EdgecpmException) {
                        chatInSync = false
                    }
                }
            }
        } catch (e: CloudException) {
            if (localFallback) {
                local(answer, " · cloud failed: ${e.message}")?.let { fail(answer, it) }
            } else {
                fail(answer, "$reason; cloud failed: ${e.message}")
            }
        } finally {
            cloudInFlight = null
        }
    }

    private fun fail(answer: UiMessage, why: String) {
        answer.text = "error: $why"
        answer.error = true
        answer.meta = "no answer"
    }

    private fun freeMemoryBytes(): Long {
        val am = getApplication<Application>().getSystemService(Context.ACTIVITY_SERVICE) as ActivityManager
        val info = ActivityManager.MemoryInfo()
        am.getMemoryInfo(info)
        return info.availMem - info.threshold // what can be used before the system starts killing apps
    }

    private fun closeModel() { // engine thread
        chat?.close()
        chat = null
        model?.close()
        model = null
        localProblem = "no model loaded"
    }

    override fun onCleared() {
        stop()
        runBlocking(engine) { closeModel() }
        engineThread.shutdown()
    }

    private companion object {
        const val MB = 1L shl 20
    }
}
