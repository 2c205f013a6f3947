// Every word the pages show, in Spanish (the daycare's language, and the
// default) and English, and the little machinery that puts them on the page.
// Markup names a string with data-i18n="key" (text) or
// data-i18n-attr="attr:key attr:key" (attributes); scripts call t(key, vars).

const STRINGS = {
  es: {
    'lang.other': 'English',
    'lang.otherCode': 'en',
    'lang.switchLabel': 'Cambiar el idioma a inglés',

    'nav.viewer': 'Ver la cámara',
    'nav.camera': 'Transmitir',
    'nav.admin': 'Administración',

    'account.as': 'Sesión iniciada como',
    'account.logout': 'Salir',
    'account.logoutLabel': 'Cerrar la sesión',
    'role.staff': 'Personal',
    'role.admin': 'Dirección',

    'login.pageTitle': 'Entrar · kindercam',
    'login.title': 'Cámara del aula',
    'login.intro': 'Mira el aula en vivo y conversa con las otras familias y el personal del jardín.',
    'login.name': 'Tu nombre en el chat',
    'login.nameHint': 'Así te verán los demás, por ejemplo «Mamá de Sofía».',
    'login.code': 'Código de acceso',
    'login.codeHint': 'Te lo da el personal del jardín. Si no lo tienes o dejó de funcionar, pídeselo.',
    'login.show': 'Mostrar',
    'login.hide': 'Ocultar',
    'login.showLabel': 'Mostrar el código',
    'login.hideLabel': 'Ocultar el código',
    'login.submit': 'Entrar',
    'login.submitting': 'Entrando…',
    'login.wait': 'Espera {n} s',
    'login.privacy': 'La cámara es privada: solo entran las familias y el personal con su código. No compartas el código fuera del jardín.',
    'login.ended': 'Se cerró tu sesión. Para seguir mirando, escribe el código otra vez; si ya no funciona, pide uno nuevo al personal del jardín.',
    'login.fromInvite': 'El código de tu familia ya está escrito: solo falta tu nombre.',
    'login.err.wrong_code': 'Ese código no es correcto. Revísalo o pídeselo de nuevo al personal del jardín.',
    'login.err.rate_limited': 'Demasiados intentos fallidos. Espera unos segundos antes de volver a intentarlo.',
    'login.err.bad_name': 'Escribe un nombre de 1 a 32 caracteres.',
    'login.err.busy': 'El servidor está ocupado revisando otros códigos. Inténtalo de nuevo en unos segundos.',
    'login.err.needCode': 'Escribe el código de acceso.',
    'login.err.other': 'No se pudo entrar. Inténtalo de nuevo.',

    'viewer.title': 'Cámara del aula',
    'viewer.pageTitle': 'Cámara del aula · kindercam',
    'viewer.pictureAlt': 'Imagen en vivo del aula',
    'viewer.stream': 'Cámara',
    'viewer.fullscreen': 'Pantalla completa',
    'viewer.exitFullscreen': 'Salir de pantalla completa',
    'viewer.snapshot': 'Descargar foto',
    'viewer.snapshotShort': 'Foto',
    'viewer.mainCamera': 'Cámara principal',
    'viewer.snapshotSaved': 'Foto descargada.',
    'viewer.snapshotFailed': 'No hay una imagen para descargar en este momento.',
    'viewer.connecting': 'Conectando con la cámara…',
    'viewer.reconnecting': 'Se perdió la conexión. Reintentando…',
    'viewer.offline': 'La cámara no está transmitiendo ahora.',
    'viewer.waiting': 'Todavía no transmite nadie en esta cámara.',
    'viewer.lastSeen': 'Última imagen {age}.',
    'viewer.deviceLimit.one': 'Tu familia ya está mirando en 1 dispositivo, el máximo permitido a la vez. Cierra la cámara en el otro dispositivo y vuelve a intentarlo.',
    'viewer.deviceLimit.many': 'Tu familia ya está mirando en {n} dispositivos, el máximo permitido a la vez. Cierra la cámara en otro dispositivo y vuelve a intentarlo.',
    'viewer.retry': 'Intentar de nuevo',

    'state.connecting': 'Conectando…',
    'state.live': 'En vivo',
    'state.reconnecting': 'Reconectando…',
    'state.offline': 'Cámara sin señal',
    'state.refused': 'Límite de dispositivos',
    'state.paused': 'En pausa',
    'state.closed': 'Cerrada',
    'viewer.paused': 'El personal pausó la cámara un momento. Vuelve a las {time}.',
    'viewer.closed': 'La cámara está cerrada fuera del horario. Abre el {when}.',
    'viewer.closedNever': 'La cámara está cerrada ahora.',

    'pause.title': 'Pausa para las familias',
    'pause.open': 'Las familias pueden mirar.',
    'pause.paused': 'En pausa para las familias hasta las {time}: quedan {n} min.',
    'pause.pausedBy': 'La pausó {who}.',
    'pause.closed': 'Cerrada para las familias: fuera del horario.',
    'pause.minutes': 'Minutos',
    'pause.pause': 'Pausar',
    'pause.resume': 'Reanudar ahora',
    'pause.failed': 'No se pudo: {msg}',

    'age.now': 'ahora',
    'age.s': 'hace {n} s',
    'age.m': 'hace {n} min',
    'age.h': 'hace {n} h',

    'chat.title': 'Chat',
    'chat.online.one': '1 persona en línea',
    'chat.online.many': '{n} personas en línea',
    'chat.name': 'Tu nombre',
    'chat.color': 'Tu color',
    'chat.message': 'Mensaje',
    'chat.placeholder': 'Escribe un mensaje…',
    'chat.send': 'Enviar',
    'chat.newMessages': 'Mensajes nuevos ↓',
    'chat.you': 'tú',
    'chat.as': 'Escribes como',
    'chat.staff': 'Personal',
    'chat.staffTitle': 'Escribe en nombre del jardín',
    'chat.rateLimited': 'Vas muy rápido: espera un segundo entre mensajes.',
    'chat.muted': 'El personal pausó tus mensajes por un rato.',
    'chat.mutedFor': 'El personal pausó tus mensajes: podrás escribir de nuevo en {n} min.',
    'chat.mutedNotice': 'El personal silenció a {name} durante {n} min.',
    'chat.mutedSomeone': 'El personal silenció a un participante por un rato.',
    'chat.forbidden': 'Solo el personal puede moderar el chat.',
    'chat.badCommand': 'No se pudo: ese mensaje ya no está entre los recientes.',
    'chat.badMessage': 'El servidor no aceptó el mensaje.',
    'chat.delete': 'Borrar',
    'chat.deleteLabel': 'Borrar el mensaje de {name}',
    'chat.mute': 'Silenciar',
    'chat.muteLabel': 'Silenciar a {name} durante {n} min',
    'chat.confirmDelete': '¿Borrar este mensaje para todos?',
    'chat.confirmMute': '¿Silenciar a {name} durante {n} min? No podrá escribir en el chat.',
    'chat.doDelete': 'Sí, borrar',
    'chat.doMute': 'Sí, silenciar',
    'chat.cancel': 'Cancelar',
    'chat.empty': 'Todavía no hay mensajes. ¡Saluda!',
    'chat.joined.one': '1 persona entró',
    'chat.joined.many': '{n} personas entraron',
    'chat.left.one': '1 persona salió',
    'chat.left.many': '{n} personas salieron',
    'chat.lagged': 'La conexión fue lenta y se perdieron algunos mensajes.',
    'chat.needName': 'Escribe tu nombre antes de enviar.',
    'chat.tooLong': 'El mensaje es demasiado largo (máximo {n} caracteres).',
    'chat.serverError': 'El servidor no aceptó el mensaje: {msg}',
    'chat.connecting': 'Conectando…',
    'chat.disconnected': 'Sin conexión. Reconectando…',

    'cam.pageTitle': 'Transmitir · kindercam',
    'cam.title': 'Transmitir esta cámara',
    'cam.stream': 'Nombre de la transmisión',
    'cam.streamHint': 'Minúsculas, números, - y _. Las familias eligen este nombre para mirar.',
    'cam.camera': 'Cámara',
    'cam.back': 'Trasera',
    'cam.front': 'Frontal',
    'cam.devices': 'Dispositivos',
    'cam.deviceN': 'Cámara {n}',
    'cam.resolution': 'Resolución',
    'cam.interval': 'Intervalo',
    'cam.intervalOption': '{s} s',
    'cam.quality': 'Calidad JPEG',
    'cam.start': 'Empezar a transmitir',
    'cam.stop': 'Detener',
    'cam.preview': 'La vista previa aparece al empezar.',
    'cam.framesSent': 'Imágenes enviadas',
    'cam.lastSize': 'Tamaño por imagen',
    'cam.viewers': 'Familias mirando',
    'cam.kb': '{n} KB',
    'cam.state.idle': 'Detenida',
    'cam.state.starting': 'Abriendo la cámara…',
    'cam.state.connecting': 'Conectando…',
    'cam.state.live': 'Transmitiendo',
    'cam.state.reconnecting': 'Reconectando…',
    'cam.hidden': 'La transmisión se detuvo porque la página quedó oculta. Pulsa «Empezar a transmitir» para seguir.',
    'cam.err.busy': 'Otro dispositivo ya está transmitiendo a «{name}». Detenlo allí o elige otro nombre.',
    'cam.err.waitSlot': 'El servidor aún ve la conexión anterior a «{name}». Reintentando…',
    'cam.err.reserved': '«{name}» está reservado para la cámara del servidor; elige otro nombre.',
    'cam.err.server': 'El servidor respondió: {msg}',
    'cam.err.badName': 'El nombre admite de 1 a 32 minúsculas, números, - y _.',
    'cam.err.insecure': 'El navegador solo permite usar la cámara en páginas seguras (https) o en localhost.',
    'cam.err.denied': 'No hay permiso para usar la cámara. Permítelo en el navegador y vuelve a intentar.',
    'cam.err.notFound': 'No se encontró ninguna cámara.',
    'cam.err.busyDevice': 'La cámara está ocupada por otra aplicación.',
    'cam.err.camera': 'No se pudo abrir la cámara ({msg}).',
    'cam.err.tooBig': 'La imagen supera el límite del servidor; baja la calidad o la resolución.',
    'cam.err.noConfig': 'No se pudo leer la configuración del servidor.',

    'admin.pageTitle': 'Administración · kindercam',
    'admin.title': 'Administración',
    'admin.families': 'Familias',
    'admin.addTitle': 'Añadir una familia',
    'admin.editTitle': 'Editar «{name}»',
    'admin.add': 'Añadir familia',
    'admin.save': 'Guardar cambios',
    'admin.saving': 'Guardando…',
    'admin.cancel': 'Cancelar',
    'admin.name': 'Nombre de la familia',
    'admin.namePlaceholder': 'Familia Pérez',
    'admin.nameHint': 'Así la verán el personal, el chat y el registro.',
    'admin.rooms': 'Salas que puede ver',
    'admin.roomExtra': 'Otra sala',
    'admin.roomsHint': 'Marca las salas, o escribe otras separadas por comas (minúsculas, números, - y _).',
    'admin.maxDevices': 'Dispositivos a la vez',
    'admin.maxHint': 'Cuántos teléfonos o computadores de la familia pueden mirar al mismo tiempo (de 1 a 20).',
    'admin.noFamilies': 'Todavía no hay familias. Añade la primera arriba.',
    'admin.devices.one': 'Hasta 1 dispositivo a la vez',
    'admin.devices.many': 'Hasta {n} dispositivos a la vez',
    'admin.watchingN': 'Mirando ahora: {n}',
    'admin.lastSeen': 'Última visita: {when}',
    'admin.never': 'Todavía no ha entrado',
    'admin.edit': 'Editar',
    'admin.rotate': 'Nuevo código',
    'admin.revoke': 'Revocar',
    'admin.editLabel': 'Editar {name}',
    'admin.rotateLabel': 'Dar un código nuevo a {name}',
    'admin.revokeLabel': 'Revocar el acceso de {name}',
    'admin.confirmRevoke': '¿Revocar el acceso de {name}? Sus dispositivos dejan de ver al instante y su código deja de funcionar.',
    'admin.confirmRotate': '¿Dar un código nuevo a {name}? El código actual deja de funcionar y sus dispositivos tendrán que entrar otra vez.',
    'admin.doRevoke': 'Sí, revocar',
    'admin.doRotate': 'Sí, cambiar el código',
    'admin.added': 'Se añadió {name}. Entrégale la invitación.',
    'admin.saved': 'Se guardaron los cambios de {name}.',
    'admin.revoked': '{name} ya no tiene acceso.',
    'admin.rotated': '{name} tiene un código nuevo. Entrégale la invitación.',
    'admin.watching': 'Mirando ahora',
    'admin.nobody': 'Nadie está mirando en este momento.',
    'admin.since': 'desde {time}',
    'admin.role.staff': 'Personal',
    'admin.role.admin': 'Dirección',
    'admin.role.viewer': 'Código compartido',
    'admin.goneFamily': 'Familia revocada',
    'admin.noName': 'Sin nombre',
    'admin.log': 'Registro de visualizaciones',
    'admin.from': 'Desde',
    'admin.to': 'Hasta',
    'admin.show': 'Mostrar',
    'admin.csv': 'Descargar CSV',
    'admin.col.start': 'Inicio',
    'admin.col.end': 'Fin',
    'admin.col.who': 'Quién',
    'admin.col.family': 'Familia',
    'admin.col.room': 'Sala',
    'admin.col.address': 'Dirección IP',
    'admin.stillWatching': 'Mirando',
    'admin.pauseRow': 'Pausa para las familias, hasta las {until}',
    'admin.pauseResumed': 'Pausa para las familias, hasta las {until}; la reanudó {who}',
    'admin.stillPaused': 'Sigue en pausa',
    'admin.logCount.one': '1 visualización en esas fechas.',
    'admin.logCount.many': '{n} visualizaciones en esas fechas.',
    'admin.logCapped': 'Se muestran las {shown} más recientes de {n}; el CSV las tiene todas.',
    'admin.logNone': 'No hubo visualizaciones en esas fechas.',
    'admin.err.name': 'Escribe un nombre de 1 a 64 caracteres.',
    'admin.err.rooms': 'Elige al menos una sala.',
    'admin.err.room': '«{room}» no es un nombre de sala válido: de 1 a 32 minúsculas, números, - y _.',
    'admin.err.max': 'Escribe un número entero de 1 a 20.',
    'admin.err.dates': 'La fecha «Desde» no puede ser posterior a «Hasta».',
    'admin.err.server': 'El servidor respondió: {msg}',
    'admin.err.network': 'No se pudo hablar con el servidor. Revisa la conexión e inténtalo de nuevo.',
    'admin.err.gone': 'Esa familia ya no existe; la lista se actualizó.',
    'admin.err.qr': 'No se pudo crear el código QR; el código y el enlace sirven igual.',

    'invite.title': 'Invitación a la cámara del aula',
    'invite.qrAlt': 'Código QR del enlace para entrar',
    'invite.scan': 'Escanea el código QR con la cámara del teléfono y escribe solo tu nombre.',
    'invite.code': 'Código de acceso',
    'invite.page': 'Página',
    'invite.link': 'Enlace directo',
    'invite.note': 'El código es solo para tu familia: no lo compartas. Si se pierde, pide uno nuevo al jardín.',
    'invite.once': 'El código se muestra solo ahora: imprímelo o anótalo antes de cerrar.',
    'invite.print': 'Imprimir la invitación',
    'invite.close': 'Cerrar',
  },
  en: {
    'lang.other': 'Español',
    'lang.otherCode': 'es',
    'lang.switchLabel': 'Switch the language to Spanish',

    'nav.viewer': 'Watch the camera',
    'nav.camera': 'Broadcast',
    'nav.admin': 'Admin',

    'account.as': 'Signed in as',
    'account.logout': 'Log out',
    'account.logoutLabel': 'Log out',
    'role.staff': 'Staff',
    'role.admin': 'Director',

    'login.pageTitle': 'Sign in · kindercam',
    'login.title': 'Classroom camera',
    'login.intro': 'Watch the classroom live and chat with the other families and the daycare staff.',
    'login.name': 'Your name in the chat',
    'login.nameHint': 'This is how others will see you, for example “Sofía’s mum”.',
    'login.code': 'Access code',
    'login.codeHint': 'The daycare staff give it to you. If you do not have it, or it stopped working, ask them.',
    'login.show': 'Show',
    'login.hide': 'Hide',
    'login.showLabel': 'Show the code',
    'login.hideLabel': 'Hide the code',
    'login.submit': 'Sign in',
    'login.submitting': 'Signing in…',
    'login.wait': 'Wait {n} s',
    'login.privacy': 'The camera is private: only families and staff with their code can get in. Do not share the code outside the daycare.',
    'login.ended': 'You were logged out. To keep watching, enter the code again; if it no longer works, ask the daycare staff for a new one.',
    'login.fromInvite': 'Your family’s code is already filled in: just add your name.',
    'login.err.wrong_code': 'That code is not right. Check it, or ask the daycare staff for it again.',
    'login.err.rate_limited': 'Too many failed attempts. Wait a few seconds before trying again.',
    'login.err.bad_name': 'Enter a name of 1 to 32 characters.',
    'login.err.busy': 'The server is busy checking other codes. Try again in a few seconds.',
    'login.err.needCode': 'Enter the access code.',
    'login.err.other': 'Could not sign in. Please try again.',

    'viewer.title': 'Classroom camera',
    'viewer.pageTitle': 'Classroom camera · kindercam',
    'viewer.pictureAlt': 'Live picture of the classroom',
    'viewer.stream': 'Camera',
    'viewer.fullscreen': 'Full screen',
    'viewer.exitFullscreen': 'Exit full screen',
    'viewer.snapshot': 'Download photo',
    'viewer.snapshotShort': 'Photo',
    'viewer.mainCamera': 'Main camera',
    'viewer.snapshotSaved': 'Photo downloaded.',
    'viewer.snapshotFailed': 'There is no picture to download right now.',
    'viewer.connecting': 'Connecting to the camera…',
    'viewer.reconnecting': 'Connection lost. Retrying…',
    'viewer.offline': 'The camera is not broadcasting right now.',
    'viewer.waiting': 'Nobody is broadcasting on this camera yet.',
    'viewer.lastSeen': 'Last picture {age}.',
    'viewer.deviceLimit.one': 'Your family is already watching on 1 device, the most allowed at once. Close the camera on the other device and try again.',
    'viewer.deviceLimit.many': 'Your family is already watching on {n} devices, the most allowed at once. Close the camera on another device and try again.',
    'viewer.retry': 'Try again',

    'state.connecting': 'Connecting…',
    'state.live': 'Live',
    'state.reconnecting': 'Reconnecting…',
    'state.offline': 'Camera offline',
    'state.refused': 'Device limit',
    'state.paused': 'Paused',
    'state.closed': 'Closed',
    'viewer.paused': 'The staff paused the camera for a moment. It is back at {time}.',
    'viewer.closed': 'The camera is closed outside opening hours. It opens {when}.',
    'viewer.closedNever': 'The camera is closed now.',

    'pause.title': 'Pause for families',
    'pause.open': 'Families can watch.',
    'pause.paused': 'Paused for families until {time}: {n} min left.',
    'pause.pausedBy': 'Paused by {who}.',
    'pause.closed': 'Closed to families: outside opening hours.',
    'pause.minutes': 'Minutes',
    'pause.pause': 'Pause',
    'pause.resume': 'Resume now',
    'pause.failed': 'Could not do it: {msg}',

    'age.now': 'just now',
    'age.s': '{n} s ago',
    'age.m': '{n} min ago',
    'age.h': '{n} h ago',

    'chat.title': 'Chat',
    'chat.online.one': '1 person online',
    'chat.online.many': '{n} people online',
    'chat.name': 'Your name',
    'chat.color': 'Your colour',
    'chat.message': 'Message',
    'chat.placeholder': 'Write a message…',
    'chat.send': 'Send',
    'chat.newMessages': 'New messages ↓',
    'chat.you': 'you',
    'chat.as': 'Writing as',
    'chat.staff': 'Staff',
    'chat.staffTitle': 'Writes on behalf of the daycare',
    'chat.rateLimited': 'Slow down: wait a second between messages.',
    'chat.muted': 'Staff paused your messages for a while.',
    'chat.mutedFor': 'Staff paused your messages: you can write again in {n} min.',
    'chat.mutedNotice': 'Staff muted {name} for {n} min.',
    'chat.mutedSomeone': 'Staff muted a participant for a while.',
    'chat.forbidden': 'Only staff can moderate the chat.',
    'chat.badCommand': 'Could not do that: the message is no longer among the recent ones.',
    'chat.badMessage': 'The server did not accept the message.',
    'chat.delete': 'Delete',
    'chat.deleteLabel': 'Delete {name}’s message',
    'chat.mute': 'Mute',
    'chat.muteLabel': 'Mute {name} for {n} min',
    'chat.confirmDelete': 'Delete this message for everyone?',
    'chat.confirmMute': 'Mute {name} for {n} min? They will not be able to write in the chat.',
    'chat.doDelete': 'Yes, delete',
    'chat.doMute': 'Yes, mute',
    'chat.cancel': 'Cancel',
    'chat.empty': 'No messages yet. Say hello!',
    'chat.joined.one': '1 person joined',
    'chat.joined.many': '{n} people joined',
    'chat.left.one': '1 person left',
    'chat.left.many': '{n} people left',
    'chat.lagged': 'The connection was slow and some messages were missed.',
    'chat.needName': 'Enter your name before sending.',
    'chat.tooLong': 'The message is too long (at most {n} characters).',
    'chat.serverError': 'The server did not accept the message: {msg}',
    'chat.connecting': 'Connecting…',
    'chat.disconnected': 'Offline. Reconnecting…',

    'cam.pageTitle': 'Broadcast · kindercam',
    'cam.title': 'Broadcast this camera',
    'cam.stream': 'Stream name',
    'cam.streamHint': 'Lower-case letters, digits, - and _. Families pick this name to watch.',
    'cam.camera': 'Camera',
    'cam.back': 'Back',
    'cam.front': 'Front',
    'cam.devices': 'Devices',
    'cam.deviceN': 'Camera {n}',
    'cam.resolution': 'Resolution',
    'cam.interval': 'Interval',
    'cam.intervalOption': '{s} s',
    'cam.quality': 'JPEG quality',
    'cam.start': 'Start broadcasting',
    'cam.stop': 'Stop',
    'cam.preview': 'The preview appears when you start.',
    'cam.framesSent': 'Frames sent',
    'cam.lastSize': 'Size per frame',
    'cam.viewers': 'Families watching',
    'cam.kb': '{n} KB',
    'cam.state.idle': 'Stopped',
    'cam.state.starting': 'Opening the camera…',
    'cam.state.connecting': 'Connecting…',
    'cam.state.live': 'Broadcasting',
    'cam.state.reconnecting': 'Reconnecting…',
    'cam.hidden': 'Broadcasting stopped because the page was hidden. Press “Start broadcasting” to go on.',
    'cam.err.busy': 'Another device is already broadcasting to “{name}”. Stop it there or choose another name.',
    'cam.err.waitSlot': 'The server still sees the previous connection to “{name}”. Retrying…',
    'cam.err.reserved': '“{name}” is reserved for the server’s own camera; choose another name.',
    'cam.err.server': 'The server said: {msg}',
    'cam.err.badName': 'The name takes 1 to 32 lower-case letters, digits, - and _.',
    'cam.err.insecure': 'The browser only allows the camera on secure pages (https) or on localhost.',
    'cam.err.denied': 'No permission to use the camera. Allow it in the browser and try again.',
    'cam.err.notFound': 'No camera was found.',
    'cam.err.busyDevice': 'The camera is in use by another application.',
    'cam.err.camera': 'Could not open the camera ({msg}).',
    'cam.err.tooBig': 'The picture is over the server’s limit; lower the quality or the resolution.',
    'cam.err.noConfig': 'Could not read the server’s settings.',

    'admin.pageTitle': 'Admin · kindercam',
    'admin.title': 'Admin',
    'admin.families': 'Families',
    'admin.addTitle': 'Add a family',
    'admin.editTitle': 'Edit “{name}”',
    'admin.add': 'Add family',
    'admin.save': 'Save changes',
    'admin.saving': 'Saving…',
    'admin.cancel': 'Cancel',
    'admin.name': 'Family name',
    'admin.namePlaceholder': 'The Smith family',
    'admin.nameHint': 'How staff, the chat and the log will see it.',
    'admin.rooms': 'Rooms it may watch',
    'admin.roomExtra': 'Another room',
    'admin.roomsHint': 'Tick the rooms, or type others separated by commas (lower-case letters, digits, - and _).',
    'admin.maxDevices': 'Devices at once',
    'admin.maxHint': 'How many of the family’s phones or computers may watch at the same time (1 to 20).',
    'admin.noFamilies': 'No families yet. Add the first one above.',
    'admin.devices.one': 'Up to 1 device at once',
    'admin.devices.many': 'Up to {n} devices at once',
    'admin.watchingN': 'Watching now: {n}',
    'admin.lastSeen': 'Last visit: {when}',
    'admin.never': 'Not signed in yet',
    'admin.edit': 'Edit',
    'admin.rotate': 'New code',
    'admin.revoke': 'Revoke',
    'admin.editLabel': 'Edit {name}',
    'admin.rotateLabel': 'Give {name} a new code',
    'admin.revokeLabel': 'Revoke {name}’s access',
    'admin.confirmRevoke': 'Revoke {name}’s access? Its devices stop watching at once and its code stops working.',
    'admin.confirmRotate': 'Give {name} a new code? The current code stops working and its devices must sign in again.',
    'admin.doRevoke': 'Yes, revoke',
    'admin.doRotate': 'Yes, change the code',
    'admin.added': '{name} was added. Give them the invite.',
    'admin.saved': '{name}: changes saved.',
    'admin.revoked': '{name} no longer has access.',
    'admin.rotated': '{name} has a new code. Give them the invite.',
    'admin.watching': 'Watching now',
    'admin.nobody': 'Nobody is watching right now.',
    'admin.since': 'since {time}',
    'admin.role.staff': 'Staff',
    'admin.role.admin': 'Director',
    'admin.role.viewer': 'Shared code',
    'admin.goneFamily': 'Revoked family',
    'admin.noName': 'No name',
    'admin.log': 'Viewing log',
    'admin.from': 'From',
    'admin.to': 'To',
    'admin.show': 'Show',
    'admin.csv': 'Download CSV',
    'admin.col.start': 'Start',
    'admin.col.end': 'End',
    'admin.col.who': 'Who',
    'admin.col.family': 'Family',
    'admin.col.room': 'Room',
    'admin.col.address': 'IP address',
    'admin.stillWatching': 'Watching',
    'admin.pauseRow': 'Paused for families, until {until}',
    'admin.pauseResumed': 'Paused for families, until {until}; resumed by {who}',
    'admin.stillPaused': 'Still paused',
    'admin.logCount.one': '1 viewing session in those dates.',
    'admin.logCount.many': '{n} viewing sessions in those dates.',
    'admin.logCapped': 'Showing the newest {shown} of {n}; the CSV has them all.',
    'admin.logNone': 'Nobody watched in those dates.',
    'admin.err.name': 'Enter a name of 1 to 64 characters.',
    'admin.err.rooms': 'Choose at least one room.',
    'admin.err.room': '“{room}” is not a valid room name: 1 to 32 lower-case letters, digits, - and _.',
    'admin.err.max': 'Enter a whole number from 1 to 20.',
    'admin.err.dates': 'The “From” date cannot be after the “To” date.',
    'admin.err.server': 'The server said: {msg}',
    'admin.err.network': 'Could not reach the server. Check the connection and try again.',
    'admin.err.gone': 'That family no longer exists; the list was refreshed.',
    'admin.err.qr': 'Could not make the QR code; the code and the link work all the same.',

    'invite.title': 'Invitation to the classroom camera',
    'invite.qrAlt': 'QR code of the sign-in link',
    'invite.scan': 'Scan the QR code with the phone’s camera and type only your name.',
    'invite.code': 'Access code',
    'invite.page': 'Page',
    'invite.link': 'Direct link',
    'invite.note': 'The code is for your family only: do not share it. If it gets lost, ask the daycare for a new one.',
    'invite.once': 'The code is shown only now: print it or write it down before closing.',
    'invite.print': 'Print the invite',
    'invite.close': 'Close',
  },
};

const STORAGE_KEY = 'kindercam.lang';
const listeners = [];

function stored() {
  try {
    return localStorage.getItem(STORAGE_KEY);
  } catch {
    return null; // storage can be off (private mode); then the browser decides
  }
}

function detect() {
  const saved = stored();
  if (saved && saved in STRINGS) return saved;
  for (const tag of navigator.languages || [navigator.language || '']) {
    const base = String(tag).toLowerCase().split('-')[0];
    if (base in STRINGS) return base;
  }
  return 'es';
}

let lang = detect();

export function currentLang() {
  return lang;
}

/** The string `key` in the current language, with {name} placeholders filled in. */
export function t(key, vars = {}) {
  const text = STRINGS[lang][key] ?? STRINGS.es[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (all, name) => (name in vars ? String(vars[name]) : all));
}

/** Formats a number the local way (decimal comma in Spanish). */
export function num(n, digits = 0) {
  return new Intl.NumberFormat(lang, { maximumFractionDigits: digits }).format(n);
}

/** "hace 5 s" / "5 s ago" for an age in milliseconds. */
export function age(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 2) return t('age.now');
  if (s < 120) return t('age.s', { n: s });
  if (s < 7200) return t('age.m', { n: Math.round(s / 60) });
  return t('age.h', { n: Math.round(s / 3600) });
}

/** Fills in every data-i18n element under `root`. */
export function translate(root = document) {
  document.documentElement.lang = lang;
  for (const el of root.querySelectorAll('[data-i18n]')) {
    el.textContent = t(el.dataset.i18n);
  }
  for (const el of root.querySelectorAll('[data-i18n-attr]')) {
    for (const pair of el.dataset.i18nAttr.split(' ')) {
      const [attr, key] = pair.split(':');
      el.setAttribute(attr, t(key));
    }
  }
}

/** Calls `fn` now and after every language change. */
export function onLanguage(fn) {
  listeners.push(fn);
  fn(lang);
}

export function setLang(next) {
  if (!(next in STRINGS) || next === lang) return;
  lang = next;
  try {
    localStorage.setItem(STORAGE_KEY, lang);
  } catch {
    // not remembered, but still switched
  }
  translate();
  for (const fn of listeners) fn(lang);
}

/** Wires a button that switches between the two languages. */
export function languageToggle(button) {
  onLanguage(() => {
    button.textContent = t('lang.other');
    button.lang = t('lang.otherCode');
    button.title = t('lang.switchLabel');
  });
  button.addEventListener('click', () => setLang(t('lang.otherCode')));
}
