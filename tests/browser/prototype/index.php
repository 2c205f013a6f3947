<!DOCTYPE html>
<html>
<head>
<meta charset='UTF-8' />
<title>Chat</title>
<!--
  The daycare prototype's chat page, as built on the sanwebe.com tutorial
  "Simple chat using WebSocket and PHP socket": name, message and colour sent as
  JSON to server.php, and `usermsg` / `system` messages appended to the box.
  Kept as a test fixture (tests/browser/run.mjs), served as it is from another
  origin. Two things differ from the original: the tutorial loaded jQuery from a
  CDN (this is plain DOM code doing the same, since the tests run offline), and
  PHP picked the colour (here the same list is drawn from in the page). The
  WebSocket host comes from `?ws=HOST:PORT`, the one line a daycare would edit.
-->
<style type="text/css">
.chat_wrapper {
	width: 500px;
	margin-right: auto;
	margin-left: auto;
	background: #CCCCCC;
	border: 1px solid #999999;
	padding: 10px;
	font: 12px 'lucida grande',tahoma,verdana,arial,sans-serif;
}
.chat_wrapper .message_box {
	background: #FFFFFF;
	height: 150px;
	overflow: auto;
	padding: 10px;
	border: 1px solid #999999;
}
.chat_wrapper .panel input{
	padding: 2px 2px 2px 5px;
}
.system_msg{color: #BDBDBD;font-style: italic;}
.user_name{font-weight:bold;}
.user_message{color: #88B6E0;}
</style>
</head>
<body>
<script type="text/javascript">
document.addEventListener('DOMContentLoaded', function() {
	var colours = ['007AFF','FF7000','FF7000','15E25F','CFC700','CFC700','CF1100','CF00BE','F00'];
	var user_colour = colours[Math.floor(Math.random() * colours.length)];
	var box = document.getElementById('message_box');
	var append = function(html) { box.insertAdjacentHTML('beforeend', html); };

	//create a new WebSocket object.
	var wsUri = "ws://" + (new URLSearchParams(location.search).get('ws') || "localhost:9000") + "/chat/server.php";
	websocket = new WebSocket(wsUri);

	websocket.onopen = function(ev) { // connection is open
		append("<div class=\"system_msg\">Connected!</div>"); //notify user
	}

	document.getElementById('send-btn').addEventListener('click', function(){ //use clicks message send button
		var mymessage = document.getElementById('message').value; //get message text
		var myname = document.getElementById('name').value; //get user name

		if(myname == ""){ //empty name?
			alert("Enter your Name please!");
			return;
		}
		if(mymessage == ""){ //emtpy message?
			alert("Enter Some message Please!");
			return;
		}

		//prepare json data
		var msg = {
		message: mymessage,
		name: myname,
		color : user_colour
		};
		//convert and send data to server
		websocket.send(JSON.stringify(msg));
	});

	//#### Message received from server?
	websocket.onmessage = function(ev) {
		var msg = JSON.parse(ev.data); //PHP sends Json data
		var type = msg.type; //message type
		var umsg = msg.message; //message text
		var uname = msg.name; //user name
		var ucolor = msg.color; //color

		if(type == 'usermsg')
		{
			append("<div><span class=\"user_name\" style=\"color:#"+ucolor+"\">"+uname+"</span> : <span class=\"user_message\">"+umsg+"</span></div>");
		}
		if(type == 'system')
		{
			append("<div class=\"system_msg\">"+umsg+"</div>");
		}

		document.getElementById('message').value = ''; //reset text
	};

	websocket.onerror	= function(ev){append("<div class=\"system_error\">Error Occurred - "+ev.data+"</div>");};
	websocket.onclose 	= function(ev){append("<div class=\"system_msg\">Connection Closed</div>");};
});
</script>
<div class="chat_wrapper">
<div class="message_box" id="message_box"></div>
<div class="panel">
<input type="text" name="name" id="name" placeholder="Your Name" maxlength="10" style="width:20%"  />
<input type="text" name="message" id="message" placeholder="Message" maxlength="80" style="width:60%" />
<button id="send-btn">Send</button>
</div>
</div>
</body>
</html>
