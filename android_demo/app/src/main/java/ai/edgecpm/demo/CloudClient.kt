package ai.edgecpm.demo

import org.json.JSONArray
import org.json.JSONException
import org.json.JSONObject
import java.io.IOException
import java.net.HttpURLConnection
import java.net.SocketTimeoutException
import java.net.URI
import java.net.URL

class CloudException(message: String) : Exception(message)

/**
 * An OpenAI-compatible chat endpoint (POST {base}/chat/completions, stream off: as in the Python router, a
 * cloud answer is shown once complete). Messages never contain the key or the URL's credentials: only
 * [safeUrl] (user info and query values removed) is ever shown.
 */
class CloudClient(private val baseUrl: String, val model: String, private val apiKey: String?) {
    val safeUrl: String = redact(baseUrl)

    @Volatile
    private var connection: HttpURLConnection? = null

    @Volatile
    private var cancelled = false

    /** Blocking; call off the main thread. */
    fun complete(messages: List<Pair<String, String>>, maxTokens: Int): String {
        cancelled = false
        val body = JSONObject()
            .put("model", model.ifEmpty { "default" })
            .put("max_tokens", maxTokens)
            .put("stream", false)
            .put("messages", JSONArray().apply {
                for ((role, content) in messages) put(JSONObject().put("role", role).put("content", content))
            })
        val conn = try {
            URL(baseUrl.trimEnd('/') + "/chat/completions").openConnection() as HttpURLConnection
        } catch (e: IOException) {
            throw CloudException("the cloud URL $safeUrl is not usable")
        } catch (e: IllegalArgumentException) {
            throw CloudException("the cloud URL $safeUrl is not usable")
        }
        connection = conn
        try {
            conn.connectTimeout = 10_000
            conn.readTimeout = 120_000
            conn.requestMethod = "POST"
            conn.doOutput = true
            conn.setRequestProperty("Content-Type", "application/json")
            if (!apiKey.isNullOrEmpty()) conn.setRequestProperty("Authorization", "Bearer $apiKey")
            conn.outputStream.use { it.write(body.toString().toByteArray(Charsets.UTF_8)) }
            val code = conn.responseCode
            if (code != HttpURLConnection.HTTP_OK) throw CloudException("$safeUrl answered HTTP $code")
            val text = conn.inputStream.bufferedReader(Charsets.UTF_8).use { it.readText() }
            val message = JSONObject(text).getJSONArray("choices").getJSONObject(0).getJSONObject("message")
            if (message.isNull("content")) throw CloudException("$safeUrl sent no answer text")
            return message.getString("content")
        } catch (e: SocketTimeoutException) {
            throw CloudException("$safeUrl did not answer in time")
        } catch (e: JSONException) {
            throw CloudException("a malformed answer from $safeUrl")
        } catch (e: IOException) {
            throw CloudException(if (cancelled) "stopped" else "cannot reach $safeUrl (${e.javaClass.simpleName})")
        } finally {
            connection = null
            conn.disconnect()
        }
    }

    /** Aborts a request in flight (from any thread). */
    fun cancel() {
        cancelled = true
        connection?.disconnect()
    }

    companion object {
        fun redact(url: String): String = try {
            val u = URI(url)
            URI(u.scheme, null, u.host, u.port, u.path, if (u.rawQuery != null) "***" else null, null).toString()
        } catch (e: Exception) {
            "the cloud endpoint"
        }
    }
}
