package ai.edgecpm.demo

import android.os.Bundle
import androidx.activity.ComponentActivity
import androidx.activity.compose.setContent
import androidx.compose.foundation.background
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Box
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.Spacer
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.layout.width
import androidx.compose.foundation.lazy.LazyColumn
import androidx.compose.foundation.lazy.items
import androidx.compose.foundation.lazy.rememberLazyListState
import androidx.compose.foundation.rememberScrollState
import androidx.compose.foundation.shape.RoundedCornerShape
import androidx.compose.foundation.text.KeyboardOptions
import androidx.compose.foundation.verticalScroll
import androidx.compose.material3.AlertDialog
import androidx.compose.material3.Button
import androidx.compose.material3.DropdownMenu
import androidx.compose.material3.DropdownMenuItem
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.RadioButton
import androidx.compose.material3.Surface
import androidx.compose.material3.Switch
import androidx.compose.material3.Text
import androidx.compose.material3.TextButton
import androidx.compose.runtime.Composable
import androidx.compose.runtime.LaunchedEffect
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.remember
import androidx.compose.runtime.setValue
import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.graphics.Color
import androidx.compose.ui.text.font.FontFamily
import androidx.compose.ui.text.input.KeyboardType
import androidx.compose.ui.text.input.PasswordVisualTransformation
import androidx.compose.ui.unit.dp
import androidx.compose.ui.unit.sp
import androidx.lifecycle.viewmodel.compose.viewModel

class MainActivity : ComponentActivity() {
    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContent {
            MaterialTheme {
                Surface(Modifier.fillMaxSize()) { ChatScreen(viewModel()) }
            }
        }
    }
}

@Composable
fun ChatScreen(vm: ChatViewModel) {
    var showSettings by remember { mutableStateOf(false) }
    var input by remember { mutableStateOf("") }
    val list = rememberLazyListState()
    LaunchedEffect(vm.messages.size, vm.messages.lastOrNull()?.text?.length) {
        if (vm.messages.isNotEmpty()) list.scrollToItem(vm.messages.size - 1)
    }
    Column(Modifier.fillMaxSize().padding(8.dp)) {
        Row(verticalAlignment = Alignment.CenterVertically) {
            ModelPicker(vm, Modifier.weight(1f))
            TextButton(onClick = { vm.newChat() }, enabled = !vm.busy) { Text("New") }
            TextButton(onClick = { showSettings = true }) { Text("Settings") }
        }
        Text(vm.status, fontSize = 12.sp, color = Color.Gray)
        LazyColumn(Modifier.weight(1f).fillMaxWidth(), state = list) {
            items(vm.messages) { MessageBubble(it) }
        }
        Row(verticalAlignment = Alignment.CenterVertically) {
            OutlinedTextField(value = input, onValueChange = { input = it }, modifier = Modifier.weight(1f),
                              placeholder = { Text("Message") }, enabled = !vm.busy)
            Spacer(Modifier.width(4.dp))
            if (vm.busy) {
                Button(onClick = { vm.stop() }) { Text("Stop") }
            } else {
                Column {
                    Button(onClick = { vm.send(input, askCloud = false); input = "" }) { Text("Send") }
                    if (!vm.settings.localOnly && vm.settings.cloudUrl.isNotBlank()) {
                        TextButton(onClick = { vm.send(input, askCloud = true); input = "" }) { Text("Cloud") }
                    }
                }
            }
        }
    }
    if (showSettings) SettingsDialog(vm) { showSettings = false }
}

@Composable
fun ModelPicker(vm: ChatViewModel, modifier: Modifier) {
    var expanded by remember { mutableStateOf(false) }
    Box(modifier) {
        TextButton(onClick = { vm.rescan(); expanded = true }, enabled = !vm.busy) {
            Text(vm.current?.name ?: "Pick a model")
        }
        DropdownMenu(expanded = expanded, onDismissRequest = { expanded = false }) {
            if (vm.models.isEmpty()) {
                DropdownMenuItem(text = { Text("no artifact in files/models (see README)") }, onClick = { expanded = false })
            }
            for (dir in vm.models) {
                DropdownMenuItem(text = { Text(dir.name) }, onClick = { expanded = false; vm.select(dir) })
            }
        }
    }
}

@Composable
fun MessageBubble(m: UiMessage) {
    val mine = m.role == "user"
    Column(Modifier.fillMaxWidth().padding(vertical = 4.dp),
           horizontalAlignment = if (mine) Alignment.End else Alignment.Start) {
        val color = when {
            m.error -> Color(0xFFFDE2E2)
            mine -> Color(0xFFDCEBFF)
            else -> Color(0xFFF1F1F1)
        }
        Text(m.text.ifEmpty { "…" }, Modifier.background(color, RoundedCornerShape(8.dp)).padding(8.dp))
        if (m.meta.isNotEmpty()) Text(m.meta, fontSize = 11.sp, color = Color.Gray)
    }
}

@Composable
fun SettingsDialog(vm: ChatViewModel, close: () -> Unit) {
    val s = vm.settings
    var threads by remember { mutableStateOf(if (s.threads == 0) "" else s.threads.toString()) }
    var provider by remember { mutableStateOf(s.provider) }
    var localOnly by remember { mutableStateOf(s.localOnly) }
    var url by remember { mutableStateOf(s.cloudUrl) }
    var cloudModel by remember { mutableStateOf(s.cloudModel) }
    var key by remember { mutableStateOf("") } // the stored key is never shown; empty = keep it
    var clearKey by remember { mutableStateOf(false) }
    AlertDialog(
        onDismissRequest = close,
        confirmButton = {
            TextButton(onClick = {
                val new = s.copy(threads = threads.toIntOrNull()?.coerceIn(0, 64) ?: 0, provider = provider,
                                 localOnly = localOnly, cloudUrl = url.trim(), cloudModel = cloudModel.trim())
                vm.saveSettings(new, if (clearKey) "" else key.ifEmpty { null })
                close()
            }) { Text("Save") }
        },
        dismissButton = { TextButton(onClick = close) { Text("Cancel") } },
        title = { Text("Settings") },
        text = {
            Column(Modifier.verticalScroll(rememberScrollState()), verticalArrangement = Arrangement.spacedBy(6.dp)) {
                OutlinedTextField(value = threads, onValueChange = { threads = it.filter(Char::isDigit) },
                                  label = { Text("Threads (empty = default)") },
                                  keyboardOptions = KeyboardOptions(keyboardType = KeyboardType.Number))
                Text("Execution provider (CPU takes what it refuses)")
                for (p in Provider.values()) {
                    Row(verticalAlignment = Alignment.CenterVertically) {
                        RadioButton(selected = provider == p, onClick = { provider = p })
                        Text(p.label)
                    }
                }
                if (vm.placement.isNotEmpty()) {
                    Text("Where the nodes went:", fontSize = 12.sp)
                    Text(vm.placement.trim(), fontSize = 11.sp, fontFamily = FontFamily.Monospace)
                }
                Row(verticalAlignment = Alignment.CenterVertically) {
                    Switch(checked = localOnly, onCheckedChange = { localOnly = it })
                    Spacer(Modifier.width(8.dp))
                    Text("Local only (never use the cloud)")
                }
                OutlinedTextField(value = url, onValueChange = { url = it }, enabled = !localOnly,
                                  label = { Text("Cloud URL (OpenAI-compatible, …/v1)") })
                OutlinedTextField(value = cloudModel, onValueChange = { cloudModel = it }, enabled = !localOnly,
                                  label = { Text("Cloud model") })
                OutlinedTextField(value = key, onValueChange = { key = it; clearKey = false }, enabled = !localOnly,
                                  label = { Text(if (vm.hasApiKey) "API key (stored; type to replace)" else "API key") },
                                  visualTransformation = PasswordVisualTransformation(),
                                  keyboardOptions = KeyboardOptions(keyboardType = KeyboardType.Password))
                if (vm.hasApiKey) {
                    TextButton(onClick = { clearKey = true; key = "" }) { Text(if (clearKey) "Key will be removed" else "Remove key") }
                }
            }
        },
    )
}
